"""Saga compensation: undo completed steps newest first when a run fails or is cancelled.

Each compensation is a visit of the one visit loop (``Visitor.compensate``): recorded
(``compensating``, then ``compensated``), retried under its step's policy with ``step_retry``
events, and a retry delay longer than ``durable_after`` suspends the run until it is due (a
worker then goes on with the rollback). A compensation that fails for good stops the
rollback: the run ends ``failed`` with both errors, and that step's record stays
``completed`` (it was not undone).
"""

from __future__ import annotations

import attrs

from flux.engine._keys import COMPENSATION
from flux.engine._state import Failed, RunState, Suspended
from flux.engine._visit import Visitor
from flux.events import RollbackComplete, StepCompensate
from flux.records import ErrorInfo, StepRecord
from flux.status import RunStatus, StepStatus


def compensable(state: RunState) -> list[StepRecord]:
    """Completed visits whose step has a compensation, newest first (nested steps too)."""
    find = state.workflow.find
    undoable = (StepStatus.COMPLETED, StepStatus.COMPENSATING)
    return [
        r
        for r in reversed(state.records)
        if r.status in undoable and getattr(find(r.step), "compensate", None) is not None
    ]


async def rollback(visitor: Visitor, error: ErrorInfo) -> tuple[RunStatus, ErrorInfo] | Suspended:
    """Compensate newest first. Returns how the run ends (``rolled_back``, ``cancelled`` after
    a cancellation, ``failed`` when a compensation failed) or Suspended (a durable delay)."""
    d = visitor.d
    for record in compensable(d):
        spec = d.workflow.find(record.step)
        assert spec is not None
        result = await visitor.compensate(spec, record)
        if isinstance(result, Suspended):
            return result
        if isinstance(result, Failed):
            comp_error = result.record.error
            assert comp_error is not None
            # Not undone, so still completed: a resume must not run the step again.
            d.put(_settled(d.records[record.seq], StepStatus.COMPLETED, comp_error))
            d.event(StepCompensate, step=spec.name, attempt=record.attempts, error=comp_error)
            d.event(RollbackComplete, succeeded=False)
            return RunStatus.FAILED, attrs.evolve(error, compensation=comp_error)
        d.put(_settled(d.records[record.seq], StepStatus.COMPENSATED, None))
        d.event(StepCompensate, step=spec.name, attempt=record.attempts)
    d.event(RollbackComplete, succeeded=True)
    return (RunStatus.CANCELLED if error.type == "Cancelled" else RunStatus.ROLLED_BACK), error


def _settled(record: StepRecord, status: StepStatus, error: ErrorInfo | None) -> StepRecord:
    actions = {k: v for k, v in record.actions.items() if k != COMPENSATION}
    return attrs.evolve(record, status=status, error=error, wake_at=None, actions=actions)
