"""Start runs for the workers: ``python enqueue.py DB WORKFLOW COUNT [INPUT-JSON]``.

Prints one run id a line. Runs of ``ledgered`` get ``ledgered_input(n)``; others INPUT-JSON.
"""

from __future__ import annotations

import asyncio
import json
import sys

from worker_flows import WORKFLOWS, ledgered_input

from flux import FluxEngine
from flux.storage import SQLiteStorage


async def main(db: str, name: str, count: int, raw: str) -> None:
    flow = WORKFLOWS[name]
    async with FluxEngine(storage=SQLiteStorage(db)) as engine:
        for n in range(count):
            payload = ledgered_input(n) if name == "ledgered" else json.loads(raw)
            print(await engine.start(flow, payload), flush=True)


if __name__ == "__main__":
    asyncio.run(
        main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else "null")
    )
