"""A worker process over a storage URL: ``python scale_worker.py URL [options]``.

    --concurrency N  --poll S  --lease S  --redis URL (wake-ups over Redis)

Prints ``ready`` once the engine is open (and listening for wake-ups), ``stopped`` at the end.
Notes ``started RUN STEP`` in the ledger on every step_start, for the latency tests.
"""

from __future__ import annotations

import argparse
import asyncio

from scale_flows import WORKFLOWS, note

from flux import Event, FluxEngine
from flux.storage import from_url
from flux.wake import RedisWaker


async def main(args: argparse.Namespace) -> None:
    engine = FluxEngine(
        storage=from_url(args.url),
        workflows=WORKFLOWS.values(),
        durable_after=0.5,
        poll_interval=args.poll,
        lease=args.lease,
        waker=RedisWaker(args.redis) if args.redis else None,
    )

    def started(event: Event) -> None:
        note("started", event.run_id, getattr(event, "step", "-"))

    engine.on("step_start", started)
    async with engine:
        worker = engine.worker(concurrency=args.concurrency, grace_period=5)
        print("ready", flush=True)
        await worker.run(handle_signals=True)
    print("stopped", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--poll", type=float, default=0.25)
    parser.add_argument("--lease", type=float, default=30.0)
    parser.add_argument("--redis", default=None)
    asyncio.run(main(parser.parse_args()))
