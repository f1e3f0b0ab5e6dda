"""PostgreSQL's own CPU instructions per durable step, counted by valgrind's callgrind: flux
against a raw asyncpg INSERT+COMMIT loop (repeatable to ~1% on a busy machine, unlike the
wall-clock ratios of ``postgres_throughput.py``).

    .venv/bin/python benchmarks/postgres_server_instructions.py

It starts a private PostgreSQL server of its own under ``valgrind --tool=callgrind`` (initdb
in a temporary directory under /dev/shm, a free port; the binaries from ``pg_config
--bindir`` or Debian's /usr/lib/postgresql/*/bin; as the ``postgres`` OS user when run as
root), so nothing else's work is counted. Callgrind writes one count per server process when
it exits: each measurement opens its own connections, lets them close, and adds up the
counts of the backends that served it. Each workload is counted with N and 3N steps; the
difference over the 2N extra steps is the cost of one step (connection start-up and warm-up
cancel out). Workloads:

- ``flux``: ten-step runs of async no-op steps on PostgresStorage, one at a time;
- ``raw``: one INSERT of a small row, committed on its own, per step, on one connection.

The client process is counted by ``step_instructions.py`` (``postgres-noop`` and
``raw-asyncpg``). Needs valgrind and the PostgreSQL server binaries. Not part of the test
run: it measures, it does not assert.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flux import FluxEngine, StepContext, create_workflow  # noqa: E402
from flux.storage import PostgresStorage  # noqa: E402

STEPS = 10


async def noop(ctx: StepContext[Any]) -> None:
    return None


def bindir() -> Path:
    """Where initdb and postgres are."""
    if pg_config := shutil.which("pg_config"):
        found = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if (Path(found.stdout.strip()) / "initdb").exists():
            return Path(found.stdout.strip())
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if not versions:
        sys.exit("no PostgreSQL server binaries (initdb, postgres) found")
    return Path(versions[-1]).parent


@contextlib.contextmanager
def server_under_callgrind() -> Iterator[tuple[str, Path]]:
    """A private server under callgrind: its DSN and the directory of the count files."""
    binaries = bindir()
    shm = Path("/dev/shm")
    root = Path(tempfile.mkdtemp(prefix="flux-pg-callgrind-", dir=shm if shm.is_dir() else None))
    counts = root / "counts"
    counts.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:  # postgres will not run as root
        for path in (root, counts):
            shutil.chown(path, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = root / "data"
    initdb = [str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"]
    subprocess.run([*as_user, *initdb], check=True, capture_output=True)
    server = subprocess.Popen(
        [
            *as_user,
            "valgrind",
            "--tool=callgrind",
            "--trace-children=yes",  # every backend is a fork of the postmaster
            f"--callgrind-out-file={counts}/%p",
            str(binaries / "postgres"),
            "-D",
            str(data),
            "-p",
            str(port),
            "-k",
            str(root),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "autovacuum=off",  # no background worker's count mixed in
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres", counts
    finally:
        stop = [str(binaries / "pg_ctl"), "stop", "-D", str(data), "-m", "immediate"]
        subprocess.run([*as_user, *stop], capture_output=True)
        server.wait()
        shutil.rmtree(root, ignore_errors=True)


async def backends(dsn: str, name: str) -> list[int]:
    """Process ids of the server's backends whose ``application_name`` is ``name``."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE application_name = $1", name)
        return [row[0] for row in rows]
    finally:
        await conn.close()


async def counted(counts: Path, pids: list[int]) -> int:
    """The instructions of these backends, once each has exited and callgrind wrote its count."""
    total = 0
    for pid in pids:
        path = counts / str(pid)
        for _ in range(600):
            text = path.read_text() if path.exists() else ""
            total_line = next((line for line in text.splitlines() if line.startswith("totals:")), None)
            if total_line is not None:
                total += int(total_line.split()[1])
                break
            # The backend exits after the client closed; no event tells this process when.
            await asyncio.sleep(0.1)
        else:
            raise RuntimeError(f"callgrind wrote no count for backend {pid}")
    return total


async def flux_steps(dsn: str, counts: Path, steps: int) -> int:
    builder = create_workflow("instructions")
    for index in range(STEPS):
        builder = builder.step(f"step-{index}", noop)
    plan = builder.build()
    storage = PostgresStorage(dsn, schema="flux_instructions")
    async with FluxEngine(storage=storage) as engine:
        await engine.execute(plan)  # warm up: tables, prepared statements
        pids = await backends(dsn, storage.application_name)
        for _ in range(steps // STEPS):
            await engine.execute(plan)
    return await counted(counts, pids)


async def raw_steps(dsn: str, counts: Path, steps: int) -> int:
    conn = await asyncpg.connect(dsn)
    pid = await conn.fetchval("SELECT pg_backend_pid()")
    await conn.execute("CREATE TABLE IF NOT EXISTS raw_steps (run_id text, seq int, output text)")
    for seq in range(steps):
        await conn.execute("INSERT INTO raw_steps VALUES ($1, $2, $3)", "run", seq, '"ok"')
    await conn.close()
    return await counted(counts, [pid])


async def main(steps: int) -> None:
    with server_under_callgrind() as (dsn, counts):
        for _ in range(600):  # the server starts slowly under callgrind
            with contextlib.suppress(OSError, asyncpg.PostgresError):
                await (await asyncpg.connect(dsn)).close()
                break
            await asyncio.sleep(0.2)
        print(f"server instructions per step (callgrind; {steps} vs {3 * steps} steps)")
        per_step = {}
        for name, workload in (("flux", flux_steps), ("raw", raw_steps)):
            await workload(dsn, counts, steps)  # a first pass: caches, relation files
            low, high = await workload(dsn, counts, steps), await workload(dsn, counts, 3 * steps)
            per_step[name] = (high - low) / (2 * steps)
            print(f"  {name:<5} {per_step[name]:>10,.0f}")
        print(f"  flux / raw: {per_step['flux'] / per_step['raw']:.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=200, help="steps in the smaller count (default 200)")
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed: apt-get install valgrind")
    asyncio.run(main(parser.parse_args().steps))
