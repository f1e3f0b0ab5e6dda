"""Library logging: run lifecycle at INFO, checkpoints at DEBUG, takeovers and lease loss at
WARNING, each record with run_id, workflow, step and attempt; nothing printed."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest

from flux import FluxEngine, LeaseLostError, RetryPolicy, StepContext, create_workflow
from flux.storage import MemoryStorage
from flux.testing import FakeClock


def _records(caplog: pytest.LogCaptureFixture, run_id: str) -> list[tuple[str, str, Any, Any]]:
    return [
        (r.levelname, r.getMessage(), getattr(r, "step", "-"), getattr(r, "attempt", "-"))
        for r in caplog.records
        if r.name.startswith("flux") and getattr(r, "run_id", None) == run_id
    ]


async def test_a_run_logs_start_retries_suspension_and_end(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """INFO lines for start, each retry, a suspension, the resume and the end; DEBUG per
    checkpoint; every line names the run and workflow; nothing goes to stdout or stderr."""
    failures = iter([RuntimeError("flaky"), None])

    def flaky(ctx: StepContext[Any]) -> str:
        error = next(failures)
        if error is not None:
            raise error
        return "ok"

    policy = RetryPolicy(max_attempts=3, jitter=0)
    flow = create_workflow("logged").step("flaky", flaky, retry=policy).wait_for_signal("go").build()
    caplog.set_level(logging.DEBUG, logger="flux")
    async with FluxEngine(clock=FakeClock()) as engine:
        run = await engine.execute(flow)
        await engine.signal(run.id, "go")
        done = await engine.resume(run.id)
    assert done.status == "completed"

    lines = _records(caplog, run.id)
    info = [(msg, step, attempt) for level, msg, step, attempt in lines if level == "INFO"]
    assert info == [
        (f"run {run.id} of logged started", None, None),
        (f"run {run.id}: step flaky attempt 1 failed (RuntimeError: flaky); retrying in 1s", "flaky", 1),
        (f"run {run.id} of logged suspended at step go (waiting for signal 'go')", "go", None),
        (f"run {run.id} of logged resumed at step go", None, None),
        (info[-1][0], None, None),
    ]
    assert info[-1][0].startswith(f"run {run.id} of logged completed in ")
    debug = [(msg, step) for level, msg, step, _ in lines if level == "DEBUG"]
    assert debug[0] == (f"run {run.id} checkpoint: flaky=running (run running)", "flaky")
    assert (f"run {run.id} checkpoint: go=completed (run completed)", "go") in debug
    assert all(getattr(r, "workflow", None) == "logged" for r in caplog.records if r.name == "flux.engine")
    assert capsys.readouterr() == ("", "")


async def test_failure_logs_the_failing_step_and_nothing_below_info_by_default(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A failed run's end names the failing step and attempt; at INFO no checkpoint lines."""

    def broken(ctx: StepContext[Any]) -> None:
        raise ValueError("bad order")

    caplog.set_level(logging.INFO, logger="flux")
    async with FluxEngine(clock=FakeClock()) as engine:
        run = await engine.execute(create_workflow("fails").step("broken", broken))
    assert _records(caplog, run.id)[-1] == (
        "INFO", f"run {run.id} of fails ended failed: ValueError: bad order", "broken", 1,
    )  # fmt: skip
    assert all(level == "INFO" for level, *_ in _records(caplog, run.id))


async def test_takeover_and_lease_loss_are_warnings(caplog: pytest.LogCaptureFixture) -> None:
    """An engine taking over a run whose lease expired warns; the engine that lost it warns.

    The first engine stalls: its clock stands still (so its heartbeat renews nothing) while the
    second engine's clock is past the lease.
    """
    storage, clock = MemoryStorage(), FakeClock()
    first = FluxEngine(storage, clock=clock)
    second = FluxEngine(storage, clock=FakeClock(clock.now() + timedelta(seconds=31)))

    async def steal(ctx: StepContext[Any]) -> None:
        stolen = await storage.load(ctx.run_id)
        assert stolen is not None
        await second.work.claim(stolen)  # the second process takes the run over

    flow = create_workflow("stolen").step("steal", steal).step("after", lambda ctx: None).build()
    caplog.set_level(logging.WARNING, logger="flux")
    with pytest.raises(LeaseLostError):
        await first.execute(flow, run_id="r1")
    warnings = [msg for level, msg, *_ in _records(caplog, "r1") if level == "WARNING"]
    assert warnings[0] == f"run r1 of stolen taken over from {first.owner} (its lease expired)"
    assert warnings[1].startswith("run r1 of stolen: lease lost, another process drives it now")


async def test_a_worker_logs_a_run_it_could_not_drive(caplog: pytest.LogCaptureFixture) -> None:
    """A run whose lease another process took mid-run: the worker driving it logs an ERROR
    naming the run, with its run_id and workflow fields, and goes on."""
    storage, clock = MemoryStorage(), FakeClock()
    first = FluxEngine(storage, clock=clock)
    second = FluxEngine(storage, clock=FakeClock(clock.now() + timedelta(seconds=31)))
    stolen_once: list[str] = []

    async def steal(ctx: StepContext[Any]) -> None:
        stolen = await storage.load(ctx.run_id)
        assert stolen is not None
        await second.work.claim(stolen)
        stolen_once.append(ctx.run_id)

    flow = create_workflow("stolen").step("steal", steal).step("after", lambda ctx: None).build()
    caplog.set_level(logging.ERROR, logger="flux")
    run_id = await first.start(flow, run_id="w1")
    worker = first.worker()
    async with worker:
        for _ in range(100):  # until the worker has taken the run and failed to drive it
            if _records(caplog, run_id):
                break
            await clock.advance(first.poll_interval)
    errors = _records(caplog, run_id)
    assert errors[0][0] == "ERROR"
    assert errors[0][1].startswith("worker failed to drive run w1: LeaseLostError(")
    workflows = [getattr(r, "workflow", None) for r in caplog.records if getattr(r, "run_id", None) == run_id]
    assert workflows == ["stolen"]
    assert stolen_once == ["w1"] and worker.completed == 0
