"""A process the stored-logs crash test kills with SIGKILL in the middle of a step.

    python logging_workflow.py FLUX_DB LEDGER_DB

Runs (or, after a kill, recovers) the run ``logged``. Its steps log through ``ctx.log`` with
this process's pid in every line. Step ``slow`` logs, records an action (a checkpoint), writes
``armed`` to the ledger and, in the first process only, then hangs until it is killed.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys

from flux import FluxEngine, StepContext, create_workflow
from flux.storage import SQLiteStorage

LEDGER = sys.argv[2]
PID = os.getpid()


def ledger(entry: str) -> int:
    with sqlite3.connect(LEDGER, timeout=30, isolation_level=None) as db:
        db.execute("INSERT INTO ledger(run_id, step) VALUES (?, ?)", ("logged", entry))
        return int(db.execute("SELECT count(*) FROM ledger WHERE step = 'armed'").fetchone()[0])


def first(ctx: StepContext[object]) -> str:
    ctx.log.info("pid %d: first step", PID)
    return "ok"


async def slow(ctx: StepContext[object]) -> str:
    ctx.log.warning("pid %d: before the action", PID)
    await ctx.action("mark", lambda: PID)  # checkpoints the visit, with the lines so far
    if ledger("armed") == 1:
        await asyncio.Event().wait()  # the first process hangs here until the test kills it
    ctx.log.info("pid %d: after the action", PID)
    return "done"


WORKFLOW = create_workflow("logged").step("first", first).step("slow", slow, timeout=600).build()


async def main() -> None:
    with sqlite3.connect(LEDGER, timeout=30) as db:
        db.execute("CREATE TABLE IF NOT EXISTS ledger(run_id TEXT, step TEXT)")
    async with FluxEngine(SQLiteStorage(sys.argv[1]), workflows=[WORKFLOW]) as engine:
        existing = await engine.storage.load("logged")
        if existing is None:
            result = await engine.execute(WORKFLOW, run_id="logged")
        else:
            (result,) = await engine.recover()
        if result.status != "completed":
            sys.exit(f"run ended {result.status}: {result.error}")


if __name__ == "__main__":
    asyncio.run(main())
