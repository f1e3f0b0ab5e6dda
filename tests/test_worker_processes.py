"""Workers in real processes on one SQLite file: shutdown on signals, restarts, cross-process
cancel, and 500 runs shared by several workers, one of them killed with SIGKILL.

The scripts live in tests/worker_scripts/. Their steps append lines to a ledger file (one
``O_APPEND`` write each): ``KIND RUN_ID STEP PID``. The test process reads the database through
a FluxEngine of its own and the ledger as a file. Waiting on another process has no in-process
event to await, so these tests poll (the database or the ledger) with a bounded deadline.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import pytest

from flux import FluxEngine, RunFilter, RunStatus, StepStatus
from flux.storage import SQLiteStorage

pytestmark = pytest.mark.slow  # SIGKILLs and real processes: skipped by `dev.py test --quick`

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = Path(__file__).resolve().parent / "worker_scripts"
UNFINISHED = ["pending", "running", "suspended", "rolling_back"]


@attrs.frozen
class Line:
    kind: str
    run_id: str
    step: str
    pid: int


@attrs.define
class Workdir:
    """One test's database, ledger and the processes it started."""

    root: Path
    processes: list[asyncio.subprocess.Process] = attrs.field(factory=list)

    @property
    def db(self) -> Path:
        return self.root / "flux.db"

    @property
    def ledger(self) -> Path:
        return self.root / "ledger.txt"

    def env(self) -> dict[str, str]:
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        return {**os.environ, "PYTHONPATH": path, "FLUX_LEDGER": str(self.ledger)}

    async def script(self, name: str, *args: str) -> asyncio.subprocess.Process:
        index = len(self.processes)
        err = os.open(self.root / f"{name}-{index}.err", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(SCRIPTS / name),
                *args,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                env=self.env(),
            )
        finally:
            os.close(err)
        self.processes.append(proc)
        return proc

    async def worker(self, *options: str) -> asyncio.subprocess.Process:
        """Start run_worker.py and wait for it to say it is ready."""
        proc = await self.script("run_worker.py", str(self.db), *options)
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
        assert line.strip() == b"ready", self.stderr(proc)
        return proc

    async def run_to_end(self, name: str, *args: str) -> list[str]:
        """Run a script to its end (bounded); return its stdout lines."""
        proc = await self.script(name, *args)
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode == 0, self.stderr(proc)
        return out.decode().split()

    async def enqueue(self, workflow: str, count: int, payload: Any = None) -> list[str]:
        return await self.run_to_end("enqueue.py", str(self.db), workflow, str(count), json.dumps(payload))

    def stderr(self, proc: asyncio.subprocess.Process) -> str:
        index = self.processes.index(proc)
        return next(self.root.glob(f"*-{index}.err")).read_text()

    def lines(self) -> list[Line]:
        if not self.ledger.exists():
            return []
        text = self.ledger.read_text()
        return [
            Line(kind, run, step, int(pid))
            for kind, run, step, pid in (li.split() for li in text.splitlines())
        ]

    def count(self, kind: str, run_id: str | None = None) -> int:
        return sum(1 for line in self.lines() if line.kind == kind and run_id in (None, line.run_id))

    async def stop(self, proc: asyncio.subprocess.Process, sig: int = signal.SIGTERM) -> str:
        """Send ``sig``, wait (bounded) for a clean exit and return the rest of its stdout."""
        proc.send_signal(sig)
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=30)
        assert proc.returncode == 0, self.stderr(proc)
        return out.decode()


@pytest.fixture
async def work(tmp_path: Path) -> AsyncIterator[Workdir]:
    workdir = Workdir(tmp_path)
    yield workdir
    for proc in workdir.processes:  # only the processes this test started
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.fixture
async def engine(work: Workdir) -> AsyncIterator[FluxEngine]:
    """The test's own view of the database (registers no workflow: it drives nothing)."""
    async with FluxEngine(storage=SQLiteStorage(work.db), poll_interval=0.05) as engine:
        yield engine


async def poll(check: Callable[[], Awaitable[bool] | bool], what: str, timeout: float = 30) -> None:
    """Poll another process's progress until ``check()`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        outcome = check()
        if outcome if isinstance(outcome, bool) else await outcome:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.02)  # polling a separate process: nothing in-process to await


# --- graceful shutdown --------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_a_signal_stops_the_worker_once_its_running_step_finished(
    work: Workdir, engine: FluxEngine, sig: int
) -> None:
    worker = await work.worker("--grace", "30")
    [run_id] = await work.enqueue("slow", 1, {"seconds": 1.0})
    await poll(lambda: work.count("start", run_id) == 1, "the step to start")

    out = await work.stop(worker, sig)

    assert "stopped" in out
    result = await engine.get(run_id)
    assert result.status == RunStatus.COMPLETED
    assert work.count("end", run_id) == 1


async def test_a_step_outlasting_the_grace_period_is_released_and_taken_over(
    work: Workdir, engine: FluxEngine
) -> None:
    first = await work.worker("--grace", "0.2")
    [run_id] = await work.enqueue("slow", 1, {"seconds": 120, "then": 0})
    await poll(lambda: work.count("start", run_id) == 1, "the step to start")

    started = time.monotonic()
    await work.stop(first)
    assert time.monotonic() - started < 20  # it did not wait for the 120 s step

    stored = await engine.storage.load(run_id)
    assert stored is not None
    assert stored.status == RunStatus.RUNNING
    assert (stored.owner, stored.lease_expires_at) == (None, None)  # released, not abandoned

    second = await work.worker()
    result = await engine.wait_result(run_id, timeout=30)
    await work.stop(second)

    assert result.status == RunStatus.COMPLETED
    assert (work.count("start", run_id), work.count("end", run_id)) == (2, 1)


# --- restarts and other processes ---------------------------------------------------------


async def test_a_sleeping_run_survives_a_process_restart(work: Workdir, engine: FluxEngine) -> None:
    run_id, status = await work.run_to_end("start_sleeper.py", str(work.db))  # exits mid-sleep
    assert status == "suspended"
    sleeping = await engine.get(run_id)
    assert sleeping.status == RunStatus.SUSPENDED
    assert sleeping.history[-1].wake_at is not None

    worker = await work.worker()
    result = await engine.wait_result(run_id, timeout=30)
    await work.stop(worker)

    assert result.status == RunStatus.COMPLETED
    assert result.outputs == {"done": "done"}
    assert result.duration is not None and result.duration >= 2.0
    assert work.count("step", run_id) == 1


async def test_cancel_of_a_run_driven_by_another_process(work: Workdir, engine: FluxEngine) -> None:
    worker = await work.worker()
    [run_id] = await work.enqueue("slow", 1, {"seconds": 120})
    await poll(lambda: work.count("start", run_id) == 1, "the step to start")

    asked = await engine.cancel(run_id, reason="stop it")
    result = await engine.wait_result(run_id, timeout=30)
    await work.stop(worker)

    assert asked.status == RunStatus.RUNNING  # asynchronous: the driving process acts on it
    assert result.status == RunStatus.CANCELLED
    assert result.error is not None and result.error.message == "stop it"
    assert work.count("end", run_id) == 0


# --- many runs, several workers, one killed -----------------------------------------------

RUNS = 500
STEPS = ("first", "flaky", "last")  # the steps with a ledger effect


async def test_two_workers_share_500_runs_and_survive_a_sigkill(work: Workdir, engine: FluxEngine) -> None:
    run_ids = await work.enqueue("ledgered", RUNS)
    assert len(run_ids) == RUNS
    options = ("--concurrency", "20", "--durable-after", "0.5")
    doomed = await work.worker(*options)
    survivor = await work.worker(*options)

    await poll(lambda: work.count("step") >= RUNS // 2, "the workers to get going", timeout=60)
    survivor.send_signal(signal.SIGSTOP)  # frozen a moment, so the killed worker's claims stay visible
    doomed.kill()  # SIGKILL: no cleanup, its claims stay in the database
    await doomed.wait()
    in_flight = await engine.storage.list(RunFilter(status=["running", "rolling_back"]))
    held = {run.id for run in in_flight if run.owner and run.owner.split("/")[1] == str(doomed.pid)}
    survivor.send_signal(signal.SIGCONT)
    successor = await work.worker(*options)

    async def all_finished() -> bool:
        return not await engine.list("ledgered", status=UNFINISHED, limit=1)

    await poll(all_finished, "every run to finish", timeout=60)
    await work.stop(survivor)
    await work.stop(successor)

    results = await engine.list("ledgered")
    assert len(results) == RUNS
    assert Counter(r.status for r in results) == {RunStatus.COMPLETED: RUNS}
    for result in results:
        assert [(h.step, h.status) for h in result.history] == [
            (step, StepStatus.COMPLETED) for step in ("first", "nap", "flaky", "last")
        ]

    lines = work.lines()
    killed = doomed.pid
    effects: dict[tuple[str, str], list[int]] = defaultdict(list)
    for line in lines:
        if line.kind == "step":
            effects[(line.run_id, line.step)].append(line.pid)
    assert set(effects) == {(run_id, step) for run_id in run_ids for step in STEPS}
    repeated = {key: pids for key, pids in effects.items() if len(pids) > 1}
    for key, pids in repeated.items():
        # Only a step in flight in the killed worker may have its effect twice.
        assert pids[0] == killed and killed not in pids[1:], (key, pids)
        assert len(pids) == 2, (key, pids)
    assert held, "the killed worker held no run: nothing to take over"
    assert {run_id for run_id, _ in repeated} <= held  # at most one step per run it held

    completions = Counter(line.run_id for line in lines if line.kind == "complete")
    assert max(completions.values()) == 1  # no run completed twice
    by_pid = Counter(line.pid for line in lines if line.kind == "step")
    assert by_pid[killed] > 0 and by_pid[survivor.pid] > 0 and by_pid[successor.pid] > 0
