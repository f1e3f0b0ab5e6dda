"""A PostgreSQL server restart in the middle of runs (a private server: see private_postgres):
every run completes and each completed step's effect happens exactly once."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from private_postgres import PrivateServer

from flux import FluxEngine, RunStatus, StepContext, create_workflow
from flux.storage import PostgresStorage

RUNS, STEPS = 20, 6


@pytest.fixture
def server() -> Iterator[PrivateServer]:
    private = PrivateServer.create()
    try:
        yield private
    finally:
        private.destroy()


def _note(ledger: Path, run_id: str, step: str) -> None:
    """Append one ledger line in one atomic append."""
    fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{run_id} {step}\n".encode())
    finally:
        os.close(fd)


async def _until(check: Any, what: str, timeout: float = 30) -> None:
    """Poll ``check()`` until it holds (the retries happen in the storage, with nothing to
    await from here); fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.01)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["immediate", "fast"])
async def test_runs_complete_through_a_server_restart_and_no_completed_step_runs_twice(
    server: PrivateServer, mode: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """20 runs of 6 steps (half executed, half claimed by a worker); once a third of the steps
    ran, the server is stopped (``immediate``: killed, WAL replayed at the next start;
    ``fast``: sessions ended, clean shutdown) and the steps then running finish while it is
    down, so their checkpoints fail and are retried with backoff; then it starts again.
    Every run completes, and an external ledger (a file) holds each step's effect exactly
    once: no completed step ran again."""
    ledger = tmp_path / "ledger.txt"
    trigger, down = asyncio.Event(), asyncio.Event()
    ran = 0

    async def effect(ctx: StepContext[Any]) -> str:
        nonlocal ran
        _note(ledger, ctx.run_id, ctx.step)
        ran += 1
        if ran >= RUNS * STEPS // 3:
            trigger.set()
            await down.wait()  # this step ends, and checkpoints, with the server down
        return ctx.step

    builder = create_workflow("restarted")
    for index in range(STEPS):
        builder = builder.step(f"s{index}", effect)
    flow = builder.build()
    before = server.pid()
    caplog.set_level(logging.WARNING, logger="flux.storage.postgres")

    def pauses() -> list[float]:
        """The backoff pauses of the storage's retries so far (``... retrying in 0.05s``)."""
        found = [re.search(r"retrying in ([0-9.]+)s", record.getMessage()) for record in caplog.records]
        return [float(match[1]) for match in found if match]

    storage = PostgresStorage(server.dsn, schema="flux_restart")
    async with FluxEngine(storage=storage, workflows=[flow], poll_interval=5) as engine:
        worker = engine.worker(concurrency=RUNS)
        working = asyncio.get_running_loop().create_task(worker.run())
        claimed = [await engine.start(flow) for _ in range(RUNS // 2)]  # the worker claims these
        executed = [engine.execute(flow, run_id=f"run-{n}") for n in range(RUNS - len(claimed))]
        runs = asyncio.gather(*executed, *(engine.wait_result(run_id) for run_id in claimed))
        await trigger.wait()
        await asyncio.to_thread(server.stop, mode)
        down.set()
        # A call retried three times, its pause doubling: 0.05 s, 0.1 s, then 0.2 s.
        await _until(lambda: max(pauses(), default=0) >= 0.2, "a call to be retried with backoff")
        await asyncio.to_thread(server.start)
        results = await asyncio.wait_for(runs, timeout=60)
        worker.stop()
        await working

    assert server.pid() != before  # it really was another server process
    assert [r.status for r in results] == [RunStatus.COMPLETED] * RUNS
    assert all(len(r.history) == STEPS for r in results)
    effects = Counter(tuple(line.split()) for line in ledger.read_text().splitlines())
    assert len(effects) == RUNS * STEPS
    assert set(effects.values()) == {1}, [key for key, count in effects.items() if count > 1]
