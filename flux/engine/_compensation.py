"""Saga compensation: undo completed steps newest first when a run fails or is cancelled.

Each compensation is recorded (``compensating``, then ``compensated``) and retried under its
step's policy. A compensation that fails for good stops the rollback: the run ends ``failed``
with both errors, and that step's record stays ``completed`` (it was not undone).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from flux.events import RollbackComplete, StepCompensate
from flux.plan import StepSpec, is_async_callable
from flux.records import ErrorInfo, StepRecord, replay_data
from flux.result import RunResult
from flux.serde import copy_json
from flux.status import RunStatus, StepStatus

if TYPE_CHECKING:
    from flux.engine._driver import RunDriver


def compensable(d: RunDriver) -> list[StepRecord]:
    """Completed visits whose step has a compensation, newest first (nested steps too)."""
    find = d.workflow.find
    undoable = (StepStatus.COMPLETED, StepStatus.COMPENSATING)
    return [
        r
        for r in reversed(d.records)
        if r.status in undoable and getattr(find(r.step), "compensate", None) is not None
    ]


async def rollback(d: RunDriver, error: ErrorInfo) -> RunResult:
    """Compensate newest first; ends ``rolled_back`` (``cancelled`` after a cancellation)."""
    for record in compensable(d):
        spec = d.workflow.find(record.step)
        assert spec is not None
        d._put(attrs.evolve(record, status=StepStatus.COMPENSATING))
        await d._flush()
        try:
            await _compensate(d, spec, record)
        except Exception as exc:
            comp_error = ErrorInfo.from_exception(exc, step=spec.name)
            # Not undone, so still completed: a resume must not run the step again.
            d._put(attrs.evolve(record, status=StepStatus.COMPLETED, error=comp_error))
            d._event(StepCompensate, step=spec.name, attempt=record.attempts, error=comp_error)
            d._event(RollbackComplete, succeeded=False)
            return await d._finish(RunStatus.FAILED, error=attrs.evolve(error, compensation=comp_error))
        d._put(attrs.evolve(record, status=StepStatus.COMPENSATED))
        d._event(StepCompensate, step=spec.name, attempt=record.attempts)
    d._event(RollbackComplete, succeeded=True)
    final = RunStatus.CANCELLED if error.type == "Cancelled" else RunStatus.ROLLED_BACK
    return await d._finish(final, error=error)


async def _compensate(d: RunDriver, spec: StepSpec, record: StepRecord) -> None:
    assert spec.compensate is not None
    try:
        await _compensate_attempts(d, spec, record)
    finally:  # compensations' writes to ctx.data are not kept
        d.data.load(copy_json(replay_data(d.records)).items())


async def _compensate_attempts(d: RunDriver, spec: StepSpec, record: StepRecord) -> None:
    assert spec.compensate is not None
    policy = d.env.policies(spec)
    timeout = spec.timeout or d.env.default_timeout
    is_async = is_async_callable(spec.compensate)
    attempt = 0
    while True:
        attempt += 1
        context = d._context(spec, record, attempt, record.actions)
        try:
            await d._call(spec.compensate, context, timeout, is_async)
            return
        except Exception as exc:
            if not policy.should_retry(exc, attempt):
                raise
            await d.env.clock.sleep(policy.delay_after(exc, attempt))
