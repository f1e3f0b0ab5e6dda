"""A process the construct crash tests kill with SIGKILL and start again.

    python ledger_constructs.py parallel FLUX_DB LEDGER_DB RUNS
    python ledger_constructs.py map FLUX_DB LEDGER_DB ITEMS

``parallel`` executes the runs ``run-0`` .. ``run-{RUNS-1}`` of a workflow with a parallel group
(three branches of sync, async and commit steps), a branch and a small map. ``map`` executes one
run, ``big-map``, whose map step has ITEMS items. Each start recovers what a killed predecessor
left running first. Every step and item appends a row to the ledger (another SQLite file) as
its external effect, before flux checkpoints it. Exits 0 once everything has completed.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import time
from typing import Any

from flux import FluxEngine, StepContext, create_workflow
from flux.storage import SQLiteStorage

MODE, FLUX_DB, LEDGER = sys.argv[1], sys.argv[2], sys.argv[3]
COUNT = int(sys.argv[4])
WORK = 0.005  # seconds of "work" after each effect, so kills land inside steps too
MAP_CONCURRENCY = 16

_ledger: sqlite3.Connection | None = None


def ledger() -> sqlite3.Connection:
    global _ledger
    if _ledger is None:
        _ledger = sqlite3.connect(LEDGER, timeout=30, isolation_level=None, check_same_thread=False)
        _ledger.execute("PRAGMA journal_mode=WAL")
        _ledger.execute("CREATE TABLE IF NOT EXISTS ledger(run_id TEXT, step TEXT)")
    return _ledger


def effect(run_id: str, step: str) -> None:
    with sqlite3.connect(LEDGER, timeout=30, isolation_level=None) as db:
        db.execute("INSERT INTO ledger(run_id, step) VALUES (?, ?)", (run_id, step))


def sync_step(ctx: StepContext[Any]) -> str:
    effect(ctx.run_id, ctx.step)
    time.sleep(WORK)
    return ctx.step


async def async_step(ctx: StepContext[Any]) -> str:
    await asyncio.sleep(WORK)
    effect(ctx.run_id, ctx.step)
    return ctx.step


async def item(ctx: StepContext[Any], value: int) -> int:
    effect(ctx.run_id, ctx.step)
    await asyncio.sleep(WORK)
    return value * 2


async def big_item(ctx: StepContext[Any], value: int) -> int:
    ledger().execute("INSERT INTO ledger(run_id, step) VALUES (?, ?)", (ctx.run_id, ctx.step))
    await asyncio.sleep(0)
    return value


PARALLEL = (
    create_workflow("ledger-parallel")
    .step("prepare", sync_step)
    .parallel(
        "fan-out",
        create_workflow("left").step("left-1", async_step).step("left-2", sync_step),
        create_workflow("middle").step("middle-1", sync_step).commit("middle-2", async_step),
        create_workflow("right").step("right-1", async_step).step("right-2", async_step),
    )
    .branch(
        "route",
        on=lambda ctx: "even" if int(ctx.run_id.split("-")[1]) % 2 == 0 else "odd",
        cases={
            "even": create_workflow("even").step("even-1", async_step),
            "odd": create_workflow("odd").step("odd-1", sync_step),
        },
    )
    .map("items", item, over=lambda ctx: [1, 2, 3, 4, 5], concurrency=2)
    .commit("finish", async_step)
    .build()
)

BIG_MAP = (
    create_workflow("ledger-map")
    .map("big", big_item, over=lambda ctx: list(range(COUNT)), concurrency=MAP_CONCURRENCY)
    .step("total", lambda ctx: sum(ctx.outputs["big"]))
    .build()
)


async def main() -> None:
    ledger()
    workflow = PARALLEL if MODE == "parallel" else BIG_MAP
    run_ids = [f"run-{i}" for i in range(COUNT)] if MODE == "parallel" else ["big-map"]
    async with FluxEngine(SQLiteStorage(FLUX_DB), workflows=[workflow]) as engine:
        await engine.recover()
        for run_id in run_ids:
            existing = await engine.storage.load(run_id)
            if existing is None:
                result = await engine.execute(workflow, run_id=run_id)
            elif not existing.status.finished:
                result = await engine.resume(run_id)
            else:
                continue
            if result.status != "completed":
                sys.exit(f"run {run_id} ended {result.status}: {result.error}")


if __name__ == "__main__":
    asyncio.run(main())
