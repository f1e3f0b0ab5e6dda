"""A process the crash tests kill with SIGKILL and start again.

    python ledger_workflow.py FLUX_DB LEDGER_DB RUNS

Each start recovers what a killed predecessor left running, then executes the runs
``run-0`` .. ``run-{RUNS-1}`` that do not exist yet, one after the other. Every step appends a
row to the ledger (another SQLite file) as its external effect, before flux checkpoints it.
Exits 0 once every run has completed.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import time

from flux import FluxEngine, StepContext, create_workflow
from flux.storage import SQLiteStorage

LEDGER = sys.argv[2]


WORK = 0.01  # seconds of "work" after each effect, so kills land inside steps too


def effect(ctx: StepContext[object]) -> None:
    with sqlite3.connect(LEDGER, timeout=30, isolation_level=None) as db:
        db.execute("INSERT INTO ledger(run_id, step) VALUES (?, ?)", (ctx.run_id, ctx.step))
    time.sleep(WORK)


def sync_step(ctx: StepContext[object]) -> int:
    effect(ctx)
    return ctx.attempt


async def async_step(ctx: StepContext[object]) -> int:
    await asyncio.sleep(WORK)
    effect(ctx)
    return ctx.attempt


async def action_step(ctx: StepContext[object]) -> int:
    async def charge() -> int:
        effect(ctx)
        return 42

    return await ctx.action("charge", charge)


async def data_step(ctx: StepContext[object]) -> None:
    effect(ctx)
    ctx.data["count"] = ctx.data.get("count", 0) + 1


WORKFLOW = (
    create_workflow("ledger")
    .step("sync-a", sync_step)
    .step("async-b", async_step)
    .step("action-c", action_step)
    .commit("commit-d", sync_step)
    .step("data-e", data_step)
    .commit("commit-f", async_step)
    .build()
)


async def main() -> None:
    runs = int(sys.argv[3])
    with sqlite3.connect(LEDGER, timeout=30) as db:
        db.execute("CREATE TABLE IF NOT EXISTS ledger(run_id TEXT, step TEXT)")
    async with FluxEngine(SQLiteStorage(sys.argv[1]), workflows=[WORKFLOW]) as engine:
        await engine.recover()
        for index in range(runs):
            run_id = f"run-{index}"
            existing = await engine.storage.load(run_id)
            if existing is None:
                result = await engine.execute(WORKFLOW, run_id=run_id)
            elif not existing.status.finished:
                result = await engine.resume(run_id)
            else:
                continue
            if result.status != "completed":
                sys.exit(f"run {run_id} ended {result.status}: {result.error}")


if __name__ == "__main__":
    asyncio.run(main())
