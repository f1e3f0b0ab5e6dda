"""The engine's durability operations: resume, retry_step, replay and recover.

They are methods of :class:`~flux.FluxEngine`; this module keeps them apart from running and
control, one concept per module.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import attrs

from flux.clock import Clock
from flux.engine import _logs
from flux.engine._driver import EngineContext, RunDriver
from flux.engine._ownership import owner_is_dead
from flux.engine._plans import (
    WorkflowRegistry,
    data_before,
    latest_visits,
    resume_point,
    run_header,
)
from flux.engine._reads import ReadOps
from flux.errors import InvalidInputError, InvalidRunStateError, StorageCorruptedError, StorageError
from flux.events import EventBus, WorkflowFailed
from flux.plan import Workflow
from flux.records import ErrorInfo, RunFilter, RunRecord
from flux.result import Recovery, RunResult
from flux.status import RunStatus, StepStatus
from flux.storage.protocol import Storage

logger = logging.getLogger("flux.engine")

_RECOVERABLE = (RunStatus.RUNNING, RunStatus.PENDING, RunStatus.ROLLING_BACK)
_OPEN = (StepStatus.PENDING, StepStatus.RUNNING, StepStatus.SUSPENDED)


def recoverable(run: RunRecord, now: datetime) -> bool:
    """In flight, pending, or suspended with its due time passed."""
    if run.status == RunStatus.SUSPENDED:
        return run.wake_at is not None and run.wake_at <= now
    return run.status in _RECOVERABLE


class DurabilityOps(ReadOps):
    """Continue, repeat and recover stored runs (mixed into :class:`~flux.FluxEngine`)."""

    storage: Storage
    clock: Clock
    owner: str
    _env: EngineContext
    _registry: WorkflowRegistry
    _active: dict[str, RunDriver]
    _reserved: set[str]
    _bus: EventBus
    _driving: Callable[[str], bool]
    _release: Callable[[str], Awaitable[None]]
    _ended: Callable[[str], None]
    start_engine: Callable[[], Awaitable[None]]
    _drive: Callable[..., Awaitable[RunResult]]

    # --- durability -----------------------------------------------------------------------

    async def resume(self, run_id: str, *, from_step: str | int | None = None) -> RunResult:
        """Continue a run that stopped: after a crash, a failure or a suspension.

        Without ``from_step`` completed steps are skipped and the step that was in flight runs
        again. With ``from_step`` (a name or an index) the run continues from that step, in any
        state, completed included; earlier steps keep their recorded outputs and data.

        Raises:
            RunNotFoundError, UnknownStepError, WorkflowNotRegisteredError, PlanMismatchError,
            InvalidRunStateError (the run is cancelled, another live process drives it, or
            this engine drives, claims or keeps it already: a second driver is refused, never
            joined).

        With ``from_step``, that step sees ``ctx.data`` as it was before it first ran.
        """
        run = await self._load(run_id)
        plan = self._registry.for_run(run)
        start = plan.index_of(from_step) if from_step is not None else None
        if run.status == RunStatus.CANCELLED:
            raise InvalidRunStateError(f"run {run_id} was cancelled; it cannot be resumed", run_id=run_id)
        if start is None and run.status == RunStatus.COMPLETED:
            return RunResult.from_record(run)
        if self._driving(run_id):
            raise InvalidRunStateError(
                f"run {run_id} is being driven by this engine already (a second driver would run "
                f"its steps twice); wait for it with engine.wait_result({run_id!r})",
                run_id=run_id,
            )
        claimed = await self._claim(run)
        if claimed is None:
            raise InvalidRunStateError(
                f"run {run_id} is being driven by {run.owner} (lease until "
                f"{run.lease_expires_at}); wait for it to finish or for its lease to expire",
                run_id=run_id,
            )
        return await self._resume_claimed(plan, claimed, start)

    async def retry_step(self, run_id: str, step_name: str) -> RunResult:
        """Continue a failed (or rolled back) run from ``step_name``.

        Raises:
            InvalidRunStateError: the run did not fail.
        """
        run = await self._load(run_id)
        if run.status not in (RunStatus.FAILED, RunStatus.ROLLED_BACK):
            raise InvalidRunStateError(
                f"run {run_id} is {run.status.value}, not failed; retry_step continues failed "
                "runs (use resume(run_id, from_step=...) to re-run steps of other runs)",
                run_id=run_id,
            )
        return await self.resume(run_id, from_step=step_name)

    async def replay(self, run_id: str) -> RunResult:
        """Execute a finished run again, as a new run, from its recorded history.

        Ordinary steps are not called: their recorded outputs and data changes are applied
        again. Commit steps are called again. Steps the original never finished run normally.
        """
        run = await self._load(run_id)
        if not run.status.finished:
            raise InvalidRunStateError(
                f"run {run_id} is {run.status.value}; only finished runs can be replayed",
                run_id=run_id,
            )
        plan = self._registry.for_run(run)
        header = run_header(
            plan,
            run_id=uuid.uuid4().hex,
            raw_input=run.input,
            now=self.clock.now(),
            owner=self.owner,
            lease=self._env.lease,
            labels=run.labels,
        )
        driver = RunDriver(self._env, plan, header, [], plan.codec.restore(run.input))
        driver.recorded = latest_visits(run.steps)
        return await self._drive(driver, 0)

    async def recover(self) -> Recovery:
        """Resume every run a dead process left in flight, and every suspended run whose due
        time has passed (a timer or retry delay whose process is gone); returns their results.

        A run whose owner process on this host is gone is taken over at once; one owned on
        another host once its lease expires. Safe to call when nothing is stranded and from
        several processes at once (each run is claimed by exactly one).

        Every stranded run is attempted, whatever happens to the others. The result is a
        :class:`Recovery`: a list of the resumed runs' results (in storage order), whose
        ``failures`` maps the id of each run that could not be resumed (workflow not
        registered, plan mismatch, storage failure...) to the exception that stopped it.
        """
        await self.start_engine()
        now = self.clock.now()
        stranded = [
            run
            for run in await self.storage.list(RunFilter(status=(*_RECOVERABLE, RunStatus.SUSPENDED)))
            if recoverable(run, now)
        ]
        jobs: dict[str, Awaitable[RunResult]] = {}
        failures: dict[str, Exception] = {}
        for run in stranded:
            if self._driving(run.id):
                continue
            try:
                plan = self._registry.for_run(run)
                claimed = await self._claim(run)
            except Exception as exc:
                logger.error("cannot recover run %s: %s", run.id, exc, extra={"run_id": run.id})
                failures[run.id] = exc
                continue
            if claimed is not None and not recoverable(claimed, now):
                await self._release(run.id)  # it ended or moved on since we listed it
            elif claimed is not None:
                jobs[run.id] = self._resume_claimed(plan, claimed, None)
        outcomes = await asyncio.gather(*jobs.values(), return_exceptions=True)
        resumed = []
        for run_id, outcome in zip(jobs, outcomes, strict=True):
            if isinstance(outcome, RunResult):
                resumed.append(outcome)
            elif isinstance(outcome, Exception):
                logger.error("recovering run %s failed: %r", run_id, outcome, extra={"run_id": run_id})
                failures[run_id] = outcome
            else:  # a BaseException (cancellation) stops recover itself
                raise outcome
        return Recovery(resumed, failures)

    async def _claim(self, run: RunRecord) -> RunRecord | None:
        """Claim a stored run for this engine, reserving it here first (None: another driver,
        in this engine or elsewhere, holds it). The reservation ends with its drive, or with
        :meth:`_release`."""
        if run.id in self._reserved:
            return None
        self._reserved.add(run.id)  # before any await: a second claimer here is refused
        now = self.clock.now()
        takeover = run.owner if run.owner and owner_is_dead(run.owner) else None
        lease = now + self._env.lease
        claimed = None
        try:
            claimed = await self.storage.claim(run.id, self.owner, lease, now=now, takeover=takeover)
        finally:
            if claimed is None:
                self._reserved.discard(run.id)
        if claimed is not None and run.owner not in (None, self.owner) and run.lease_expires_at is not None:
            _logs.takeover(run, "its process is gone" if takeover else "its lease expired")
        return claimed

    async def _resume_claimed(
        self,
        plan: Workflow[Any],
        run: RunRecord,
        start: int | None,
    ) -> RunResult:
        """Drive a run this engine claimed; its reservation ends with the drive."""
        try:
            return await self._drive_claimed(plan, run, start)
        finally:
            self._reserved.discard(run.id)

    async def _drive_claimed(self, plan: Workflow[Any], run: RunRecord, start: int | None) -> RunResult:
        restart = start is not None  # resume(from_step=...): the step sees the data it first saw
        if start is None and _rolling_back(run):
            # The driver finishes the rollback (it may have waited for a compensation's retry).
            header = attrs.evolve(run, status=RunStatus.ROLLING_BACK, wake_at=None)
            start = len(plan.steps)
        else:
            header = attrs.evolve(run, status=RunStatus.RUNNING, error=None, finished_at=None, wake_at=None)
            start = resume_point(plan, run.steps) if start is None else start
        try:
            check_history(run)
            typed = plan.codec.restore(run.input)
        except (InvalidInputError, StorageCorruptedError) as exc:
            return await self._fail_before_start(run, exc)
        driver = RunDriver(self._env, plan, header, list(run.steps), typed)
        from_step = plan.steps[start].name if start < len(plan.steps) else ""
        if restart and from_step:
            driver.restart_from(data_before(run.steps, from_step))
        fresh = run.status == RunStatus.PENDING and not run.steps
        return await self._drive(driver, start, resumed_from=None if fresh else from_step)

    async def _fail_before_start(self, run: RunRecord, exc: Exception) -> RunResult:
        """End a claimed run that cannot be driven at all: its stored input no longer fits the
        workflow's input type (a deploy changed it), or its step history has a gap. Failed,
        with the error saying why; never retried in a loop."""
        return await self._end_failed(run, ErrorInfo.from_exception(exc))

    async def _escaped(self, header: RunRecord, exc: BaseException) -> RunResult:
        """An error escaped the step loop (a subscriber's CancelledError, an overflow, a bug):
        end the run ``failed`` with that error, so it never stays ``running`` under a live
        engine. A storage failure ends nothing (storage is what failed): the run keeps its
        lease, which nothing renews any more, and a worker takes it over once it lapses.

        Raises:
            exc: when it is a StorageError, or the run could not be ended failed either.
        """
        run_id = header.id
        if isinstance(exc, StorageError):
            logger.error(
                "run %s stopped: storage failed (%s); a worker takes it over when its lease lapses",
                run_id, exc, extra={"run_id": run_id},
            )  # fmt: skip
            raise exc
        info = ErrorInfo.from_exception(exc)
        error = attrs.evolve(
            info, message=f"the engine could not continue the run: {info.message or info.type}"
        )
        try:
            stored = await self.storage.load(run_id)
            return await self._end_failed(stored or header, error)
        except Exception:
            logger.exception(
                "run %s: could not end it failed after %r", run_id, exc, extra={"run_id": run_id}
            )
            raise exc from None

    async def _end_failed(self, run: RunRecord, error: ErrorInfo) -> RunResult:
        """Store ``run`` as ``failed`` with ``error`` (its open step visits failed too), drop
        this engine's claim and emit ``workflow_error``."""
        now = self.clock.now()
        open_visits = [
            attrs.evolve(step, status=StepStatus.FAILED, error=error, finished_at=now)
            for step in run.steps
            if step.status in _OPEN
        ]
        failed = attrs.evolve(
            run,
            status=RunStatus.FAILED,
            error=error,
            updated_at=now,
            finished_at=now,
            wake_at=None,
            lease_expires_at=None,
            steps=(),
        )
        await self.storage.checkpoint(failed, open_visits)
        await self._release(run.id)
        if self._bus.wants(WorkflowFailed.name):
            duration = (now - run.created_at).total_seconds()
            await self._bus.emit(
                WorkflowFailed(
                    run_id=run.id,
                    workflow=run.workflow,
                    timestamp=now,
                    status=RunStatus.FAILED.value,
                    error=error,
                    duration=duration,
                )
            )
        self._ended(run.id)
        stored = await self.storage.load(run.id)
        return RunResult.from_record(stored or failed)


def check_history(run: RunRecord) -> None:
    """Refuse step records whose ``seq`` are not 0, 1, 2...: a visit numbered after a gap
    would overwrite a stored record.

    Raises:
        StorageCorruptedError: naming the run and the first missing seq.
    """
    for expected, record in enumerate(run.steps):
        if record.seq != expected:
            raise StorageCorruptedError(
                f"run {run.id!r}: its step records skip seq {expected} (found seq {record.seq}); "
                "the history was changed outside flux. Restore the database from a backup or "
                f"delete the run with `await storage.delete({run.id!r})`."
            )


def _rolling_back(run: RunRecord) -> bool:
    """A run stopped in its rollback: rolling back, or suspended for a compensation's retry."""
    if run.status == RunStatus.ROLLING_BACK:
        return True
    return (
        run.status == RunStatus.SUSPENDED
        and run.error is not None
        and any(step.status == StepStatus.COMPENSATING for step in run.steps)
    )
