"""A worker process: drives every run of the test workflows in a SQLite file until SIGTERM/SIGINT.

    python run_worker.py DB [--concurrency N] [--grace S] [--poll S] [--durable-after S]

Prints ``ready PID`` once the engine is open and ``stopped`` after a graceful shutdown.
"""

from __future__ import annotations

import argparse
import asyncio

from worker_flows import WORKFLOWS, note

from flux import Event, FluxEngine
from flux.storage import SQLiteStorage


async def main(args: argparse.Namespace) -> None:
    engine = FluxEngine(
        storage=SQLiteStorage(args.db),
        workflows=WORKFLOWS.values(),
        durable_after=args.durable_after,
        poll_interval=args.poll,
        lease=args.lease,
    )

    def completed(event: Event) -> None:
        note("complete", event.run_id)

    engine.on("workflow_complete", completed)
    async with engine:
        worker = engine.worker(concurrency=args.concurrency, grace_period=args.grace)
        print("ready", flush=True)
        await worker.run(handle_signals=True)
    print("stopped", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("db")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--grace", type=float, default=10.0)
    parser.add_argument("--poll", type=float, default=0.05)
    parser.add_argument("--durable-after", type=float, default=0.5)
    parser.add_argument("--lease", type=float, default=30.0)
    asyncio.run(main(parser.parse_args()))
