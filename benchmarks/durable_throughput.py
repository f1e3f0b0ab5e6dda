"""Durable throughput: FluxEngine on SQLiteStorage against a raw aiosqlite loop, same run.

    .venv/bin/python benchmarks/durable_throughput.py [--repeat 3] [--dir /some/disk]
    .venv/bin/python benchmarks/durable_throughput.py --instructions

The baseline is the cheapest durable thing one could write by hand: one small INSERT and one
COMMIT per step on aiosqlite, with the pragmas SQLiteStorage uses (WAL, synchronous=NORMAL,
busy timeout). Printed, each the median of ``--repeat`` rounds:

- one run at a time: 200 runs x 10 no-op async steps, run after run (target: flux >= 60% of raw);
- 100 runs in flight: the same 200 runs, 100 at a time in one process via asyncio.gather
  (target: flux >= 1.5x the raw rate, thanks to group commit);
- a 1,000-step run: the time per step and per checkpoint around step 10 and around step 1,000
  (target: within 20% of each other; a checkpoint must not cost more as history grows).

With ``--instructions`` it counts CPU instructions instead of time (valgrind's callgrind, see
``step_instructions.py``): a data-writing step on SQLiteStorage against a raw aiosqlite loop
that UPSERTs a small JSON state per step (autocommit, WAL, synchronous=NORMAL), and prints the
ratio (target: <= 2.5x). Counts are repeatable to ~1% on a busy machine, where times are not.

The ratios depend on what an aiosqlite round trip (a thread hop) costs on the machine, printed
too: the baseline makes two per step, flux one per checkpoint plus its own CPU work. Where a hop
is dear (~75-100 us, an idle machine whose cores sleep) flux wins by a wide margin; where it is
cheap (~15 us, cores kept awake by other work) the baseline gains most.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from flux import FluxEngine, StepContext, Workflow, create_workflow
from flux.records import RunRecord, StepRecord
from flux.storage import SQLiteStorage

RUNS, STEPS, IN_FLIGHT, LONG = 200, 10, 100, 1000
WINDOW = 20  # steps averaged around each measuring point of the long run
LONG_RUNS = 3  # long runs per round (the machine's speed drifts: more samples, steadier medians)


def workflow(name: str, steps: int, handler: Callable[[StepContext[Any]], Awaitable[None]]) -> Workflow[Any]:
    builder = create_workflow(name)
    for index in range(steps):
        builder = builder.step(f"step-{index}", handler)
    return builder.build()


async def noop(ctx: StepContext[Any]) -> None:
    return None


class TimedSQLiteStorage(SQLiteStorage):
    """SQLiteStorage that notes how long each checkpoint call takes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.checkpoint_times: list[float] = []

    async def checkpoint(self, run: RunRecord, steps: Sequence[StepRecord] = ()) -> None:
        started = time.perf_counter()
        await super().checkpoint(run, steps)
        self.checkpoint_times.append(time.perf_counter() - started)


# --- the measurements ------------------------------------------------------------------------


async def flux_rate(path: Path, in_flight: int) -> float:
    """Steps per second of RUNS runs of STEPS steps, ``in_flight`` at a time."""
    plan = workflow("throughput", STEPS, noop)
    async with FluxEngine(storage=SQLiteStorage(path)) as engine:
        await engine.execute(plan)  # warm up: open, migrate, first pages
        started = time.perf_counter()
        for _ in range(RUNS // in_flight):
            results = await asyncio.gather(*(engine.execute(plan) for _ in range(in_flight)))
            assert all(r.status == "completed" for r in results)
        elapsed = time.perf_counter() - started
    return RUNS * STEPS / elapsed


async def raw_rate(path: Path) -> float:
    """Steps per second of the hand-written baseline: INSERT + COMMIT per step."""
    async with aiosqlite.connect(path) as db:
        await db.execute("PRAGMA journal_mode = WAL")
        await db.execute("PRAGMA synchronous = NORMAL")
        await db.execute("PRAGMA busy_timeout = 30000")
        await db.execute("CREATE TABLE IF NOT EXISTS steps (run INTEGER, seq INTEGER, status TEXT)")
        await db.commit()
        started = time.perf_counter()
        for run in range(RUNS):
            for seq in range(STEPS):
                await db.execute("INSERT INTO steps VALUES (?, ?, ?)", (run, seq, "completed"))
                await db.commit()
        elapsed = time.perf_counter() - started
    return RUNS * STEPS / elapsed


async def hop_cost(path: Path) -> float:
    """Microseconds of one aiosqlite round trip that does nothing (the thread hop itself)."""
    async with aiosqlite.connect(path) as db:
        started = time.perf_counter()
        for _ in range(1000):
            await db.execute("SELECT 1")
        return (time.perf_counter() - started) / 1000 * 1e6


async def long_run(path: Path) -> tuple[list[float], list[float]]:
    """Per-step and per-checkpoint seconds (indexed by step) of one LONG-step run."""
    stamps: list[float] = []

    async def stamp(ctx: StepContext[Any]) -> None:
        stamps.append(time.perf_counter())

    plan = workflow("long", LONG, stamp)
    storage = TimedSQLiteStorage(path)
    async with FluxEngine(storage=storage) as engine:
        await engine.execute(workflow("warm-up", 3, noop))
        storage.checkpoint_times.clear()
        result = await engine.execute(plan)
        assert result.status == "completed"
    per_step = [b - a for a, b in itertools.pairwise(stamps)]
    # Checkpoint 0 starts the run; checkpoint i (i >= 1) records step i-1 done and step i started.
    return per_step, storage.checkpoint_times[1:]


def around(values: list[float], step: int) -> float:
    """The median of the WINDOW values ending at ``step`` (1-based), in microseconds."""
    window = values[max(0, step - WINDOW) : step]
    return statistics.median(window) * 1e6


# --- the report ------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISS"


async def main(repeat: int, directory: Path) -> None:
    rounds: dict[str, list[float]] = {}

    def note(name: str, value: float) -> None:
        rounds.setdefault(name, []).append(value)

    for round_ in range(repeat):
        base = directory / f"round-{round_}"
        base.mkdir()
        note("hop", await hop_cost(base / "hop.db"))
        note("raw", await raw_rate(base / "raw.db"))
        note("serial", await flux_rate(base / "serial.db", 1))
        note("parallel", await flux_rate(base / "parallel.db", IN_FLIGHT))
        for index in range(LONG_RUNS):
            per_step, checkpoints = await long_run(base / f"long-{index}.db")
            note("step@10", around(per_step, 10))
            note("step@end", around(per_step, LONG - 1))
            note("checkpoint@10", around(checkpoints, 10))
            note("checkpoint@end", around(checkpoints, LONG))
    med = {name: statistics.median(values) for name, values in rounds.items()}
    raw = med["raw"]
    print(f"durable throughput, median of {repeat} rounds ({RUNS} runs x {STEPS} no-op async steps)")
    print(f"  raw aiosqlite, INSERT + COMMIT per step   {raw:>9,.0f} steps/s  "
          f"(one aiosqlite round trip here: {med['hop']:.0f} us)")  # fmt: skip
    for name, label, target in [
        ("serial", "flux, one run at a time                ", 0.6),
        ("parallel", f"flux, {IN_FLIGHT} runs in flight              ", 1.5),
    ]:
        ratio = med[name] / raw
        print(f"  {label}   {med[name]:>9,.0f} steps/s  {ratio:5.2f}x raw  "
              f"[{verdict(ratio >= target)} target >= {target:.2f}x]")  # fmt: skip
    runs = repeat * LONG_RUNS
    print(f"a {LONG:,}-step run ({runs} of them), median over the {WINDOW} steps before each point")
    for label in ("step", "checkpoint"):
        early, late = med[f"{label}@10"], med[f"{label}@end"]
        change = late / early - 1
        print(f"  {label:<10}  at step 10 {early:7.1f} us   at step {LONG:,} {late:7.1f} us   "
              f"{change:+6.1%}  [{verdict(abs(change) <= 0.2)} target within 20%]")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3, help="rounds to take the median of (default 3)")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the databases (default: temp)")
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count instructions per data-writing step with callgrind, flux against raw aiosqlite",
    )
    args = parser.parse_args()
    if args.instructions:
        sys.path.insert(0, str(Path(__file__).parent))
        from step_instructions import report

        report(["sqlite-data", "raw-sqlite"], runs=20)
    elif args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        asyncio.run(main(args.repeat, Path(tempfile.mkdtemp(dir=args.dir))))
    else:
        with tempfile.TemporaryDirectory(prefix="flux-bench-") as tmp:
            asyncio.run(main(args.repeat, Path(tmp)))
