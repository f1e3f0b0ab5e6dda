"""Get a run into its stored wait: for tests of what happens to a run that waits on time."""

from __future__ import annotations

import asyncio
from typing import Any

from flux import FluxEngine, RunResult
from flux.events import Event


async def suspended_run(engine: FluxEngine, flow: Any, input: Any = None) -> RunResult:
    """Start ``flow`` for a worker and return the run once it has suspended.

    ``execute`` keeps a run that waits on time and continues it itself when due; a run from
    ``start`` is driven by a worker, which stores the wait (a due time) and lets go of the
    run. Tests of stored waits, restarts and wake-ups use this to stop there.
    """
    seen: set[str] = set()
    changed = asyncio.Event()

    def note(event: Event) -> None:
        seen.add(event.run_id)
        changed.set()

    unsubscribe = engine.on("workflow_suspend", note)
    try:
        async with engine.worker():
            run_id = await engine.start(flow, input)
            while run_id not in seen:
                await changed.wait()
                changed.clear()
    finally:
        unsubscribe()
    return await engine.get(run_id)
