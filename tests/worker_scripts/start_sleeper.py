"""Process 1 of the restart test: execute ``sleeper`` until it suspends in its 2 s sleep (stored
as a due time), then exit while ``execute`` still keeps the run.

python start_sleeper.py DB     (prints ``RUN_ID STATUS``)
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

from worker_flows import sleeper

from flux import FluxEngine
from flux.events import Event
from flux.storage import SQLiteStorage


async def main(db: str) -> None:
    async with FluxEngine(storage=SQLiteStorage(db), durable_after=0.5) as engine:
        suspended: asyncio.Queue[str] = asyncio.Queue()

        def note(event: Event) -> None:
            suspended.put_nowait(event.run_id)

        engine.on("workflow_suspend", note)
        keeping = asyncio.create_task(engine.execute(sleeper))  # would wait out the sleep
        run_id = await suspended.get()
        keeping.cancel()  # the process goes away mid-sleep
        with contextlib.suppress(asyncio.CancelledError):
            await keeping
        stored = await engine.get(run_id)
    print(stored.id, stored.status.value, flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
