"""A writer process for test_sqlite_storage: runs workflows through FluxEngine on a SQLite file.

Usage: ``python tests/sqlite_writer.py DB TAG RUNS``. It opens the database, prints ``ready``,
waits for a line on stdin (so that two writers start together), runs ``RUNS`` ten-step runs
at once (ids ``TAG-0`` ...), then prints ``done N`` with the number of completed runs.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from flux import FluxEngine, create_workflow
from flux.storage import SQLiteStorage

STEPS = 10


async def noop(ctx: Any) -> int:
    return int(ctx.attempt)


async def main(db: str, tag: str, runs: int) -> None:
    builder = create_workflow("two-writers")
    for index in range(STEPS):
        builder = builder.step(f"s{index}", noop)
    async with FluxEngine(storage=SQLiteStorage(db)) as engine:
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        results = await asyncio.gather(*(engine.execute(builder, run_id=f"{tag}-{i}") for i in range(runs)))
    print("done", sum(1 for r in results if r.status == "completed"), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
