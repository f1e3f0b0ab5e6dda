"""Drives one run: from a step until it completes, fails (and compensates), suspends or is
cancelled. The flow (``_flow.py``) schedules the visits; this module starts and ends runs."""

from __future__ import annotations

import asyncio

import attrs

from flux.engine._compensation import compensable, rollback
from flux.engine._flow import Flow
from flux.engine._state import OPEN, Done, EngineContext, Failed, RunState, Suspended
from flux.events import (
    RollbackStart,
    WorkflowCancel,
    WorkflowComplete,
    WorkflowFailed,
    WorkflowResume,
    WorkflowStart,
)
from flux.records import ErrorInfo, StepRecord
from flux.result import RunResult
from flux.serde import copy_json
from flux.status import RunStatus, StepStatus

__all__ = ["DEADLINE_EXCEEDED", "EngineContext", "RunDriver"]

DEADLINE_EXCEEDED = "deadline exceeded"


class RunDriver(RunState):
    """Runs one run, from a given step, until it completes, fails, suspends or rolls back."""

    async def run(self, start: int, *, resumed_from: str | None = None) -> RunResult:
        """Run plan steps from index ``start`` until the run completes, fails or suspends.

        A cancellation asked for through :meth:`request_cancel`, or the run's deadline, ends
        the run ``cancelled``.
        """
        if resumed_from is None:
            self.event(WorkflowStart)
        else:
            self.event(WorkflowResume, from_step=resumed_from)
        clock = self.env.clock
        deadline_at = self.header.deadline_at
        if deadline_at is not None and deadline_at <= clock.now():
            return await self._cancelled(DEADLINE_EXCEEDED, compensate=False)
        deadline = None if deadline_at is None else clock.timeout((deadline_at - clock.now()).total_seconds())
        try:
            if deadline is None:
                return await self._advance(start)
            async with deadline:
                return await self._advance(start)
        except TimeoutError:
            if deadline is None or not deadline.expired():
                raise
            return await self._cancelled(DEADLINE_EXCEEDED, compensate=False)
        except asyncio.CancelledError:
            request = self.cancel_request
            task = asyncio.current_task()
            if request is None or task is None:
                raise
            task.uncancel()
            return await self._cancelled(
                str(request.get("reason") or "cancelled"), bool(request.get("compensate"))
            )

    async def cancel_now(self) -> RunResult:
        """Cancel a run this driver holds but is not running (suspended or pending)."""
        request = self.cancel_request or {}
        return await self._cancelled(
            str(request.get("reason") or "cancelled"), bool(request.get("compensate"))
        )

    def request_cancel(self, reason: str | None, compensate: bool) -> None:
        """Mark the run for cancellation; the caller then cancels the driving task."""
        self.cancel_request = {"reason": reason or "cancelled", "compensate": compensate}

    async def _advance(self, start: int) -> RunResult:
        if self.header.status == RunStatus.ROLLING_BACK and self.header.error is not None:
            return await self._roll_back(self.header.error)
        result = await Flow(self).run(start)
        if isinstance(result, Done):
            return await self._finish(RunStatus.COMPLETED)
        if isinstance(result, Failed):
            return await self._fail(result.record)
        return self.result()  # suspended

    # --- endings --------------------------------------------------------------------------

    async def _fail(self, failed: StepRecord) -> RunResult:
        error = failed.error
        assert error is not None
        return await self._undo_or_finish(error, RunStatus.FAILED, compensate=True)

    async def _cancelled(self, reason: str, compensate: bool) -> RunResult:
        """End the run ``cancelled``: the open step visit fails, compensation if asked for."""
        error = ErrorInfo(type="Cancelled", message=reason)
        if self.env.hooks is not None:  # open visits of concurrent steps, child runs
            await self.env.hooks.cancelled(self, error)
        now = self.env.clock.now()
        for record in self.records:
            if record.status in OPEN:
                self.put(attrs.evolve(record, status=StepStatus.FAILED, error=error, finished_at=now))
        return await self._undo_or_finish(error, RunStatus.CANCELLED, compensate=compensate)

    async def _undo_or_finish(self, error: ErrorInfo, status: RunStatus, compensate: bool) -> RunResult:
        to_undo = compensable(self) if compensate else []
        if not to_undo:
            return await self._finish(status, error=error)
        self.event(RollbackStart, steps=tuple(r.step for r in to_undo), error=error)
        await self.flush(status=RunStatus.ROLLING_BACK, error=error)
        return await self._roll_back(error)

    async def _roll_back(self, error: ErrorInfo) -> RunResult:
        flow = Flow(self)
        while True:
            outcome = await rollback(flow, error)
            if not isinstance(outcome, Suspended):
                status, final = outcome
                return await self._finish(status, error=final)
            if not await flow.suspend(outcome):  # a long compensation retry delay
                return self.result()

    async def _finish(self, status: RunStatus, error: ErrorInfo | None = None) -> RunResult:
        now = self.env.clock.now()
        duration = (now - self.header.created_at).total_seconds()
        if status == RunStatus.COMPLETED:
            self.event(WorkflowComplete, duration=duration, outputs=copy_json(self.outputs))
        elif status == RunStatus.CANCELLED:
            self.event(WorkflowCancel, reason=error.message if error else None)
        else:
            self.event(WorkflowFailed, status=status.value, error=error, duration=duration)
        await self.flush(status=status, finished_at=now, error=error, lease_expires_at=None, wake_at=None)
        if self.env.hooks is not None:  # a child run wakes its parent
            await self.env.hooks.finished(self)
        return self.result()
