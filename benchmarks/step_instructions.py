"""CPU instructions per step, counted by valgrind's callgrind (repeatable to ~1% on a busy machine).

    .venv/bin/python benchmarks/step_instructions.py                 # every workload
    .venv/bin/python benchmarks/step_instructions.py sqlite-data raw-sqlite

Each workload runs in a fresh process under ``valgrind --tool=callgrind`` twice: once with
``--runs`` runs of a 10-step workflow and once with three times as many. The difference of the
two instruction counts, divided by the extra steps, is the cost of one step (with its share of
the run around it): start-up, imports and warm-up cancel out.

Workloads:

- ``memory-noop``: async no-op steps on MemoryStorage (target <= 106,000 instructions);
- ``memory-data``: async steps that each set one ``ctx.data`` key, MemoryStorage (<= 130,000);
- ``sqlite-data``: the same data steps on SQLiteStorage (a file, WAL, synchronous=NORMAL);
- ``raw-sqlite``: the hand-written baseline for ``sqlite-data``: aiosqlite in autocommit mode,
  WAL, synchronous=NORMAL, one UPSERT of a small JSON state per step. ``sqlite-data`` should
  stay within 2.5x of it;
- ``postgres-noop``: async no-op steps on PostgresStorage (the server of
  ``FLUX_TEST_POSTGRES_DSN``, else postgresql://postgres@127.0.0.1:5432/test, schema
  ``flux_instructions``). Only this process is counted, not the server's work;
- ``raw-asyncpg``: its hand-written baseline, one INSERT committed on its own per step.

Needs ``valgrind`` on the PATH (``apt-get install valgrind``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

STEPS = 10
WORKLOADS = ("memory-noop", "memory-data", "sqlite-data", "raw-sqlite", "postgres-noop", "raw-asyncpg")
TARGETS = {"memory-noop": 106_000, "memory-data": 130_000}
SQLITE_RATIO_TARGET = 2.5


# --- the workloads (run inside valgrind) -----------------------------------------------------


async def noop(ctx: Any) -> None:
    return None


async def set_key(ctx: Any) -> None:
    ctx.data[ctx.step] = {"n": ctx.attempt, "ok": True}


async def flux_workload(name: str, runs: int, directory: Path) -> None:
    from flux import FluxEngine, MemoryStorage, create_workflow
    from flux.storage import SQLiteStorage

    handler = noop if name == "memory-noop" else set_key
    builder = create_workflow("instructions")
    for index in range(STEPS):
        builder = builder.step(f"step-{index}", handler)
    plan = builder.build()
    if name == "postgres-noop":
        from flux.storage import PostgresStorage

        storage: Any = PostgresStorage(_dsn(), schema="flux_instructions")
    else:
        storage = SQLiteStorage(directory / "flux.db") if name == "sqlite-data" else MemoryStorage()
    async with FluxEngine(storage=storage) as engine:
        await engine.execute(plan)  # warm up: first-run caches, schema, first pages
        for _ in range(runs):
            result = await engine.execute(plan)
            assert result.status == "completed", result


async def raw_workload(runs: int, directory: Path) -> None:
    import aiosqlite

    async with aiosqlite.connect(directory / "raw.db", isolation_level=None) as db:
        await db.execute("PRAGMA journal_mode = WAL")
        await db.execute("PRAGMA synchronous = NORMAL")
        await db.execute("CREATE TABLE state (run INTEGER PRIMARY KEY, step INTEGER, data TEXT)")
        upsert = (
            "INSERT INTO state (run, step, data) VALUES (?, ?, ?) "
            "ON CONFLICT (run) DO UPDATE SET step = excluded.step, data = excluded.data"
        )
        for run in range(runs + 1):  # the first run warms up, as flux's does
            for step in range(STEPS):
                state = {"step": f"step-{step}", "n": 1, "ok": True}
                await db.execute(upsert, (run, step, json.dumps(state)))


def _dsn() -> str:
    return os.environ.get("FLUX_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")


async def raw_asyncpg_workload(runs: int) -> None:
    import asyncpg

    conn = await asyncpg.connect(_dsn())
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS flux_raw_steps (run_id text, seq int, output text)")
        for run in range(runs + 1):
            for step in range(STEPS):
                await conn.execute("INSERT INTO flux_raw_steps VALUES ($1, $2, $3)", str(run), step, '"ok"')
    finally:
        await conn.close()


def run_workload(name: str, runs: int) -> None:
    with tempfile.TemporaryDirectory(prefix="flux-instructions-") as tmp:
        if name == "raw-asyncpg":
            asyncio.run(raw_asyncpg_workload(runs))
        elif name == "raw-sqlite":
            asyncio.run(raw_workload(runs, Path(tmp)))
        else:
            asyncio.run(flux_workload(name, runs, Path(tmp)))


# --- the counting ----------------------------------------------------------------------------


def instructions(name: str, runs: int) -> int:
    """Instructions executed by a fresh process running ``runs`` runs of workload ``name``."""
    with tempfile.TemporaryDirectory(prefix="flux-callgrind-") as tmp:
        out = Path(tmp) / "callgrind.out"
        command = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            __file__,
            "--workload",
            name,
            "--runs",
            str(runs),
        ]
        env = {**os.environ, "PYTHONHASHSEED": "0"}  # the same dict layouts in every count
        subprocess.run(command, check=True, capture_output=True, env=env)
        for line in out.read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError(f"callgrind wrote no instruction total for {name}")


def per_step(name: str, runs: int) -> float:
    """Instructions of one step: the difference of two counts over the steps between them."""
    low, high = instructions(name, runs), instructions(name, 3 * runs)
    return (high - low) / (2 * runs * STEPS)


def report(names: list[str], runs: int) -> dict[str, float]:
    """Count and print instructions per step of each workload (and the SQLite ratio)."""
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed: apt-get install valgrind")
    counts: dict[str, float] = {}
    print(f"instructions per step (callgrind; {runs} vs {3 * runs} runs of {STEPS} async steps)")
    for name in names:
        counts[name] = per_step(name, runs)
        target = TARGETS.get(name)
        verdict = "" if target is None else "ok" if counts[name] <= target else "MISS"
        note = "" if target is None else f"  [{verdict} target <= {target:,}]"
        print(f"  {name:<12} {counts[name]:>10,.0f}{note}")
    if "sqlite-data" in counts and "raw-sqlite" in counts:
        ratio = counts["sqlite-data"] / counts["raw-sqlite"]
        verdict = "ok" if ratio <= SQLITE_RATIO_TARGET else "MISS"
        print(f"  sqlite-data / raw-sqlite: {ratio:.2f}x  [{verdict} target <= {SQLITE_RATIO_TARGET}x]")
    return counts


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("names", nargs="*", help=f"workloads (default: all): {', '.join(WORKLOADS)}")
    parser.add_argument("--runs", type=int, default=20, help="runs in the smaller count (default 20)")
    parser.add_argument("--workload", choices=WORKLOADS, help=argparse.SUPPRESS)  # inside valgrind
    args = parser.parse_args()
    if args.workload is not None:
        run_workload(args.workload, args.runs)
    elif unknown := sorted(set(args.names) - set(WORKLOADS)):
        sys.exit(f"unknown workload {', '.join(unknown)}; choose from {', '.join(WORKLOADS)}")
    else:
        report(args.names or list(WORKLOADS), args.runs)
