"""Durable throughput on PostgreSQL: flux against a raw asyncpg loop on the same server, and
runs/s with 1, 2 and 4 worker processes.

    .venv/bin/python benchmarks/postgres_throughput.py [--dsn postgresql://...] [--repeat 3]

The DSN defaults to ``FLUX_TEST_POSTGRES_DSN`` (else postgresql://postgres@127.0.0.1:5432/test).
Each measurement happens in a schema of its own, dropped right after it, so that none is
slowed by autovacuum cleaning up after an earlier one. Printed, each the median of
``--repeat`` rounds (and each round's ratios):

- raw: one small INSERT, committed on its own, per step, one after another on one connection:
  the cheapest durable step one could write by hand (the baseline);
- flux, one run at a time: RUNS runs of STEPS no-op async steps (target: >= 0.5x raw). The
  two are measured in alternating chunks (three runs' worth of raw steps, then three flux
  runs), so that both see the same moments of a shared machine, whose commit time changes
  from one minute to the next;
- flux, 100 runs in flight in one process (target: >= 1.0x the raw sequential rate, thanks to
  group commit: concurrent checkpoints share one statement and one commit);
- runs/s of five-step runs drained by 1, 2 and 4 worker processes (this file run with
  ``--worker``). The machine's cores bound this curve: each worker is one Python process, and
  PostgreSQL needs CPU too; where the curve flattens, the cores are busy.

The ratios depend on how long a commit takes on the server's disk (printed as the raw loop's
time per step): when it is long, the disk dominates both sides; when it is short, the extra
work of a flux checkpoint (three rows with their indexes, not one) and flux's Python show
(``postgres_server_instructions.py`` and ``step_instructions.py`` count both).
docs/guides/postgres.md ("Performance") gives measured numbers for both cases.

Not part of the test run: it measures, it does not assert.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flux import FluxEngine, StepContext, create_workflow  # noqa: E402
from flux.storage import PostgresStorage  # noqa: E402

RUNS, CHUNK_RUNS, STEPS, IN_FLIGHT = 60, 3, 10, 100
UNFINISHED = ["pending", "running", "suspended", "rolling_back"]


async def noop(ctx: StepContext[Any]) -> None:
    return None


def chain(name: str, steps: int) -> Any:
    builder = create_workflow(name)
    for index in range(steps):
        builder = builder.step(f"step-{index}", noop)
    return builder.build()


PLAN = chain("throughput", STEPS)
FIVE = chain("five-steps", 5)


def with_schema(dsn: str, schema: str) -> str:
    parts = urllib.parse.urlsplit(dsn)
    return parts._replace(query="&".join(filter(None, [parts.query, f"schema={schema}"]))).geturl()


# --- raw baseline and flux in one process -------------------------------------------------


async def sequential(dsn: str, schema: str) -> tuple[float, float]:
    """Steps/s of the raw loop and of flux running one run at a time, measured in alternating
    chunks of CHUNK_RUNS runs' worth of steps each (RUNS runs in all)."""
    conn = await asyncpg.connect(dsn)
    table = f'"{schema}".raw_steps'
    raw_seconds = flux_seconds = 0.0
    try:
        await conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (run_id text, seq int, output text)")
        async with FluxEngine(storage=PostgresStorage(dsn, schema=schema)) as engine:
            await engine.execute(PLAN)  # warm up: pool, statements
            for _ in range(RUNS // CHUNK_RUNS):
                started = time.perf_counter()
                for seq in range(CHUNK_RUNS * STEPS):
                    await conn.execute(f"INSERT INTO {table} VALUES ($1, $2, $3)", "run", seq, '"ok"')
                middle = time.perf_counter()
                for _ in range(CHUNK_RUNS):
                    result = await engine.execute(PLAN)
                    assert result.status == "completed", result
                raw_seconds += middle - started
                flux_seconds += time.perf_counter() - middle
    finally:
        await conn.close()
    steps = RUNS * STEPS
    return steps / raw_seconds, steps / flux_seconds


async def in_flight_rate(dsn: str, schema: str) -> float:
    """Steps/s of 2 x IN_FLIGHT ten-step runs, IN_FLIGHT at a time."""
    async with FluxEngine(storage=PostgresStorage(dsn, schema=schema)) as engine:
        await engine.execute(PLAN)  # warm up: pool, statements
        started = time.perf_counter()
        for _ in range(2):
            results = await asyncio.gather(*(engine.execute(PLAN) for _ in range(IN_FLIGHT)))
            assert all(r.status == "completed" for r in results)
        return 2 * IN_FLIGHT * STEPS / (time.perf_counter() - started)


# --- worker processes ---------------------------------------------------------------------


async def worker_main(url: str, concurrency: int) -> None:
    """The ``--worker`` process: wait for "go" on stdin, then drive runs until SIGTERM."""
    from flux.storage import from_url

    async with FluxEngine(storage=from_url(url), workflows=[FIVE], poll_interval=0.5) as engine:
        worker = engine.worker(concurrency=concurrency)
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        await worker.run(handle_signals=True)


async def drain(dsn: str, processes: int, runs: int, concurrency: int) -> float:
    """Enqueue ``runs`` five-step runs in a new schema; seconds for ``processes`` workers to
    finish them all."""
    schema = f"flux_bench_{uuid.uuid4().hex[:8]}"
    url = with_schema(dsn, schema)
    try:
        async with FluxEngine(storage=PostgresStorage(dsn, schema=schema)) as engine:
            for start in range(0, runs, 100):
                await asyncio.gather(*(engine.start(FIVE) for _ in range(start, min(start + 100, runs))))
            workers = [
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    __file__,
                    "--worker",
                    url,
                    "--concurrency",
                    str(concurrency),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                )
                for _ in range(processes)
            ]
            for proc in workers:
                assert proc.stdout is not None
                assert (await proc.stdout.readline()).strip() == b"ready"
            started = time.perf_counter()
            for proc in workers:
                assert proc.stdin is not None
                proc.stdin.write(b"go\n")
                await proc.stdin.drain()
            # Other processes do the work: polling the database is the only way to watch them.
            while await engine.list("five-steps", status=UNFINISHED, limit=1):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            elapsed = time.perf_counter() - started
            completed = len(await engine.list("five-steps", status="completed"))
            for proc in workers:
                proc.terminate()
                await proc.wait()
            if completed != runs:
                raise SystemExit(f"only {completed} of {runs} runs completed")
            return elapsed
    finally:
        await drop(dsn, schema)


async def drop(dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def in_new_schema(dsn: str, measure: Any) -> Any:
    """``await measure(dsn, schema)`` in a schema of its own, dropped afterwards: every
    measurement starts from empty tables, with no garbage of an earlier one for autovacuum to
    clean meanwhile (on two cores, that would take CPU from whichever came later)."""
    schema = f"flux_bench_{uuid.uuid4().hex[:8]}"
    try:
        async with PostgresStorage(dsn, schema=schema):  # creates the schema
            pass
        return await measure(dsn, schema)
    finally:
        await drop(dsn, schema)


async def main(args: argparse.Namespace) -> None:
    dsn = args.dsn
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {PostgresStorage(dsn)!r}")
    # Each round measures the baseline beside flux, so both see the same load on a shared
    # machine; the ratios are per round, their median printed.
    rounds = []
    for _ in range(args.repeat):
        raw, one = await in_new_schema(dsn, sequential)
        rounds.append((raw, one, await in_new_schema(dsn, in_flight_rate)))
    raw = statistics.median(r[0] for r in rounds)
    one, many = (statistics.median(r[i] for r in rounds) for i in (1, 2))
    one_ratio = statistics.median(r[1] / r[0] for r in rounds)
    many_ratio = statistics.median(r[2] / r[0] for r in rounds)
    print(f"raw asyncpg INSERT+COMMIT, sequential: {raw:,.0f} steps/s ({1e6 / raw:,.0f} us per step)")
    print(f"flux, one run at a time:  {one:,.0f} steps/s = {one_ratio:.2f}x raw (target >= 0.5x)")
    print(f"flux, {IN_FLIGHT} runs in flight: {many:,.0f} steps/s = {many_ratio:.2f}x raw (target >= 1.0x)")
    print("  each round, one at a time:", ", ".join(f"{r[1] / r[0]:.2f}x" for r in rounds))
    print(f"  each round, {IN_FLIGHT} in flight:", ", ".join(f"{r[2] / r[0]:.2f}x" for r in rounds))
    baseline = None
    for processes in (1, 2, 4):
        seconds = statistics.median(
            [await drain(dsn, processes, args.runs, args.concurrency) for _ in range(args.repeat)]
        )
        rate = args.runs / seconds
        baseline = baseline or rate
        print(
            f"{processes} worker process(es), concurrency {args.concurrency}: {args.runs} five-step runs "
            f"in {seconds:.2f} s = {rate:,.0f} runs/s, {rate / baseline:.2f}x one process"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    default = os.environ.get("FLUX_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--dsn", default=default)
    parser.add_argument("--runs", type=int, default=1000, help="runs drained by the worker processes")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3, help="rounds (the median is printed)")
    parser.add_argument("--worker", metavar="URL", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.worker:
        asyncio.run(worker_main(options.worker, options.concurrency))
    else:
        asyncio.run(main(options))
