"""Process 1 of the restart test: run ``sleeper`` until it suspends in its 2 s sleep, then exit.

python start_sleeper.py DB     (prints ``RUN_ID STATUS``)
"""

from __future__ import annotations

import asyncio
import sys

from worker_flows import sleeper

from flux import FluxEngine
from flux.storage import SQLiteStorage


async def main(db: str) -> None:
    async with FluxEngine(storage=SQLiteStorage(db), durable_after=0.5) as engine:
        result = await engine.execute(sleeper)
    print(result.id, result.status.value, flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
