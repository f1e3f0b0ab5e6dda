"""Drives one run through its plan: run a step, checkpoint, emit its events, decide what's next.

The driver holds the run's state in memory while it runs. Every transition is written through
``Storage.checkpoint`` before the matching events go out; the completion of one step and the
start of the next share one checkpoint, so a plain step costs one write.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any

import attrs

from flux.clock import Clock
from flux.context import RunData, StepContext
from flux.control import Directive
from flux.engine import _logs
from flux.engine._activity import Activity
from flux.engine._attempt import call_handler, maybe_await
from flux.engine._children import RunHooks, suspend_for_child
from flux.engine._compensation import compensable, rollback
from flux.engine._due import after, due_time, wait_timed_out
from flux.engine._flow import Jump, complete_goto, run_flow
from flux.engine._logbook import LogBook, LogLimits
from flux.engine._visit import ChildPending
from flux.errors import LeaseLostError
from flux.events import (
    Event,
    EventBus,
    RollbackStart,
    StepComplete,
    StepError,
    StepRetry,
    StepSkip,
    StepStart,
    StepSuspend,
    WorkflowCancel,
    WorkflowComplete,
    WorkflowError,
    WorkflowResume,
    WorkflowStart,
    WorkflowSuspend,
)
from flux.plan import StepSpec, Workflow
from flux.records import EMPTY, JSON, ErrorInfo, RunRecord, StepRecord, replay_data, replay_outputs
from flux.result import RunResult
from flux.retry import RetryPolicy
from flux.serde import check_json, copy_json
from flux.status import RunStatus, StepStatus
from flux.storage.protocol import Storage
from flux.waiting import WaitRequest

_REPLAYABLE = (StepStatus.COMPLETED, StepStatus.SKIPPED, StepStatus.COMPENSATED)
_OPEN = (StepStatus.PENDING, StepStatus.RUNNING, StepStatus.SUSPENDED)
_RUN_FIELDS = tuple(field.name for field in attrs.fields(RunRecord) if field.name != "steps")


@attrs.define(kw_only=True)
class EngineContext:
    """What every driver of one engine shares."""

    storage: Storage
    clock: Clock
    bus: EventBus
    default_timeout: float
    policies: Callable[[StepSpec], RetryPolicy]
    executor: Callable[[], Executor]
    owner: str
    lease: timedelta
    durable_after: float
    """Retry delays and sleeps longer than this many seconds suspend the run durably."""
    poll_interval: float = 0.25
    """Seconds between looks at storage for what other processes did (signals)."""
    hooks: RunHooks | None = None
    """Called at a run's end and cancellation (links child runs to their parents)."""
    log_limits: LogLimits = attrs.field(factory=LogLimits)
    """How much of ``ctx.log`` each step visit keeps."""


class Outcome(enum.Enum):
    """How a step visit ended, when it did not fail."""

    DONE = "done"
    SUSPENDED = "suspended"


DEADLINE_EXCEEDED = "deadline exceeded"


class RunDriver:
    """Runs one run, from a given step, until it completes, fails or rolls back."""

    def __init__(
        self,
        env: EngineContext,
        workflow: Workflow[Any],
        header: RunRecord,
        records: list[StepRecord],
        typed_input: Any,
    ) -> None:
        self.env = env
        self.workflow = workflow
        self._header_fields: dict[str, Any] = {}
        self._header = header
        self.header = header
        self.records = records
        self.data = RunData(replay_data(records))
        self.outputs: dict[str, JSON] = replay_outputs(records)
        self._outputs_view = MappingProxyType(self.outputs)
        self.input = typed_input
        self._pending: dict[int, StepRecord] = {}
        self._events: list[Event] = []
        self.recorded: dict[str, StepRecord] | None = None
        """On replay: the original run's latest visit of each step."""
        self.cancel_request: dict[str, JSON] | None = None
        self.activity = Activity()
        """Busy visits of a flow; a signal for this run pokes it (see ``_activity.py``)."""
        self.logbook = LogBook(records, env.log_limits, env.clock.now)
        """Lines logged through ``ctx.log``, attached to their visits' records by ``_put``."""

    # --- bookkeeping ----------------------------------------------------------------------

    @property
    def header(self) -> RunRecord:
        """The run's own fields as last checkpointed (without step records)."""
        return self._header

    @header.setter
    def header(self, value: RunRecord) -> None:
        self._header_fields = {name: getattr(value, name) for name in _RUN_FIELDS}
        self._header = RunRecord(**self._header_fields)

    def _event(self, cls: type[Event], **fields: Any) -> None:
        if self.env.bus.wants(cls.name):
            self._events.append(
                cls(
                    run_id=self.header.id,
                    workflow=self.header.workflow,
                    timestamp=self.env.clock.now(),
                    **fields,
                )
            )

    def _put(self, record: StepRecord) -> None:
        record = self.logbook.attach(record)
        if record.seq == len(self.records):
            self.records.append(record)
        else:
            self.records[record.seq] = record
        self._pending[record.seq] = record

    async def _flush(self, at: datetime | None = None, **changes: Any) -> None:
        """Checkpoint the run's fields and the pending step records, then emit pending events.

        ``at`` is the time of the transition when the caller has just read the clock.
        """
        now = at or self.env.clock.now()
        fields = self._header_fields
        fields["updated_at"] = now
        fields["lease_expires_at"] = now + self.env.lease
        fields.update(changes)
        self._header = RunRecord(**fields)
        pending, self._pending = self._pending, {}
        # Taken with the records: concurrent visits' events wait for their own checkpoints.
        events, self._events = self._events, []
        written = tuple(pending.values())
        if _logs.logger.isEnabledFor(logging.DEBUG):
            _logs.checkpoint(self.header, written)
        try:
            await self.env.storage.checkpoint(self.header, written)
        except BaseException:
            self._pending = {**pending, **self._pending}  # written again by the next checkpoint
            self._events = events + self._events
            raise
        for event in events:
            await self.env.bus.emit(event)

    def result(self) -> RunResult:
        """The run's state as a frozen result."""
        header = self.header
        return RunResult(
            id=header.id,
            workflow=header.workflow,
            status=header.status,
            data=dict(self.data),
            outputs=dict(self.outputs),
            history=tuple(self.records),
            error=header.error,
            duration=header.duration,
            input=header.input,
            created_at=header.created_at,
            finished_at=header.finished_at,
            labels=dict(header.labels),
        )

    # --- the run --------------------------------------------------------------------------

    async def run(self, start: int, *, resumed_from: str | None = None) -> RunResult:
        """Run plan steps from index ``start`` until the run completes, fails or suspends.

        A cancellation asked for through :meth:`request_cancel`, or the run's deadline, ends
        the run ``cancelled``.
        """
        if resumed_from is None:
            self._event(WorkflowStart)
        else:
            self._event(WorkflowResume, from_step=resumed_from)
        deadline_at = self.header.deadline_at
        if deadline_at is not None and deadline_at <= self.env.clock.now():
            return await self._cancelled(DEADLINE_EXCEEDED, compensate=False)
        remaining = None if deadline_at is None else (deadline_at - self.env.clock.now()).total_seconds()
        deadline = self.env.clock.timeout(remaining)
        try:
            async with deadline:
                return await self._advance(start)
        except TimeoutError:
            if not deadline.expired():
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
            return await rollback(self, self.header.error)
        if not self.workflow.plain:  # constructs, dependencies, failure routes
            return await run_flow(self, start)
        steps = self.workflow.steps
        for index in range(start, len(steps)):
            spec = steps[index]
            record = self._record_for(index)
            prior = None if self.recorded is None else self.recorded.get(spec.name)
            if prior is not None and prior.status in _REPLAYABLE:
                if not spec.commit or prior.status == StepStatus.SKIPPED:
                    self._reapply(prior)
                    continue
                record = StepRecord(
                    seq=len(self.records),
                    step=spec.name,
                    status=StepStatus.PENDING,
                    condition=prior.condition,
                )
            outcome = await self._run_step(spec, record)
            if outcome is not Outcome.DONE:
                if outcome is Outcome.SUSPENDED:
                    return self.result()
                if isinstance(outcome, StepRecord):
                    return await self._fail(outcome)
                return await run_flow(self, outcome.target)  # a goto
        return await self._finish(RunStatus.COMPLETED)

    def _reapply(self, prior: StepRecord) -> None:
        """Replay: take a recorded visit's outcome without calling the step."""
        status = StepStatus.SKIPPED if prior.status == StepStatus.SKIPPED else StepStatus.COMPLETED
        self._put(attrs.evolve(prior, seq=len(self.records), status=status))
        self.data.update(prior.data_set)
        for key in prior.data_unset:
            self.data.pop(key, None)
        self.data.take_changes()
        if prior.output is not None:
            self.outputs[prior.step] = prior.output

    def _record_for(self, index: int) -> StepRecord | None:
        """The open record of step ``index`` if the run stopped inside it (None: a new visit)."""
        if self.records:
            last = self.records[-1]
            if last.status in _OPEN and last.step == self.workflow.steps[index].name:
                return last
        return None

    async def _run_step(self, spec: StepSpec, record: StepRecord | None) -> Outcome | StepRecord | Jump:
        """Run one step visit with its retries; returns its failed record on failure.

        ``record`` is the open record of a visit that stopped midway, None for a new visit.
        """
        clock = self.env.clock
        seq, started, condition, attempt = len(self.records), clock.now(), None, 0
        if record is None and (spec.when is not None or spec.kind != "step"):
            record = StepRecord(seq=seq, step=spec.name, status=StepStatus.PENDING, started_at=started)
        if record is not None:
            seq, started, condition = record.seq, record.started_at or started, record.condition
            if spec.when is not None and condition is None:
                try:
                    condition = bool(await maybe_await(spec.when(self._context(spec, record, 0))))
                except Exception as exc:
                    return self._failed(spec, record, started, ErrorInfo.from_exception(exc, step=spec.name))
                if not condition:
                    return self._skip(spec, record, started)
                record = attrs.evolve(record, condition=True)
            if spec.kind in ("sleep", "wait") or record.waiting_for is not None:
                return await self._pause(spec, record, started)
            if record.status == StepStatus.SUSPENDED and record.wake_at and record.wake_at > clock.now():
                return await self._suspend(record, "retry delay")
            # A visit interrupted mid-attempt (a crash) runs that attempt again.
            attempt = (
                record.attempts - 1
                if record.status == StepStatus.RUNNING and record.attempts
                else record.attempts
            )
        timeout = spec.timeout or self.env.default_timeout
        stamp = started if record is None else None  # a new visit has just read the clock
        while True:
            attempt += 1
            actions = self.records[seq].actions if seq < len(self.records) else EMPTY
            record = StepRecord(
                seq=seq,
                step=spec.name,
                status=StepStatus.RUNNING,
                attempts=attempt,
                started_at=started,
                condition=condition,
                actions=actions,
            )
            self._put(record)
            self._event(StepStart, step=spec.name, attempt=attempt)
            await self._flush(stamp, status=RunStatus.RUNNING, wake_at=None)
            stamp = None
            context = self._context(spec, record, attempt, actions)
            try:
                output = await self._call(spec.handler, context, timeout, spec.is_async)
                if isinstance(output, Directive):
                    if not isinstance(output, WaitRequest):
                        return complete_goto(self, spec, seq, output)
                    changed, removed = self.data.take_changes()
                    waiting = attrs.evolve(
                        self.records[seq],
                        waiting_for=output.signal,
                        wake_at=after(clock.now(), output.timeout),
                        data_set=changed,
                        data_unset=removed,
                    )
                    return await self._pause(spec, waiting, started)
                if output is not None:
                    check_json(output, f"the output of step {spec.name!r}", step=spec.name)
                data_set, data_unset = self.data.take_changes()
                for key, value in data_set.items():
                    check_json(value, f"ctx.data[{key!r}] (set by step {spec.name!r})", step=spec.name)
                # Snapshots: a later step changing a list in place must not rewrite this record.
                output, data_set = copy_json(output), copy_json(data_set) if data_set else data_set
            except LeaseLostError:
                raise
            except ChildPending as pending:  # ctx.run_child: the child has not ended yet
                return await suspend_for_child(self, spec, seq, attempt, pending)
            except Exception as exc:
                # A failed attempt leaves no data behind: back to the data the records hold.
                self.data.load(copy_json(replay_data(self.records)).items())
                error = ErrorInfo.from_exception(exc, step=spec.name, attempt=attempt)
                record = self.records[seq]  # with the actions this attempt recorded
                policy = self.env.policies(spec)
                if not policy.should_retry(exc, attempt):
                    return self._failed(spec, record, started, error)
                delay = policy.delay_after(exc, attempt)
                self._event(StepRetry, step=spec.name, attempt=attempt, error=error, delay=delay)
                if delay > self.env.durable_after:
                    wake = clock.now() + timedelta(seconds=delay)
                    retry = attrs.evolve(record, status=StepStatus.SUSPENDED, error=error, wake_at=wake)
                    self._put(retry)
                    return await self._suspend(retry, f"retry in {delay:g}s")
                self._put(attrs.evolve(record, error=error))
                await self._flush()
                await clock.sleep(delay)
                continue
            return self._complete(spec, record, output, data_set, data_unset)

    def _skip(self, spec: StepSpec, record: StepRecord, started: datetime) -> Outcome:
        data_set, data_unset = self.data.take_changes()
        self._put(
            StepRecord(
                seq=record.seq,
                step=spec.name,
                status=StepStatus.SKIPPED,
                started_at=started,
                finished_at=self.env.clock.now(),
                condition=False,
                data_set=data_set,
                data_unset=data_unset,
            )
        )
        self._event(StepSkip, step=spec.name, attempt=0)
        return Outcome.DONE

    def _complete(
        self,
        spec: StepSpec,
        record: StepRecord,
        output: JSON,
        data_set: Mapping[str, JSON] | None = None,
        data_unset: tuple[str, ...] = (),
    ) -> Outcome:
        now = self.env.clock.now()
        started = record.started_at or now
        if data_set is None:  # a wait's handler may have changed data before it suspended
            data_set, data_unset = dict(record.data_set), record.data_unset
            self.data.apply(data_set, data_unset)
        self._put(
            StepRecord(
                seq=record.seq,
                step=spec.name,
                status=StepStatus.COMPLETED,
                attempts=record.attempts,
                started_at=started,
                finished_at=now,
                output=output,
                data_set=data_set,
                data_unset=data_unset,
                condition=record.condition,
                actions=self.records[record.seq].actions
                if record.seq < len(self.records)
                else record.actions,
            )
        )
        if output is not None:
            self.outputs[spec.name] = output
        if self.env.bus.wants(StepComplete.name):
            duration = (now - started).total_seconds()
            self._event(
                StepComplete, step=spec.name, attempt=record.attempts, duration=duration, output=output
            )
        return Outcome.DONE

    # --- waiting --------------------------------------------------------------------------

    async def _pause(self, spec: StepSpec, record: StepRecord, started: datetime) -> Outcome | StepRecord:
        """Sleep and wait steps, and handlers that returned ``flux.wait``."""
        now = self.env.clock.now()
        if record.status == StepStatus.PENDING:
            record = attrs.evolve(record, status=StepStatus.RUNNING, attempts=1, started_at=started)
            self._event(StepStart, step=spec.name, attempt=1)
        if record.waiting_for is None and spec.kind == "wait":
            record = attrs.evolve(record, waiting_for=spec.signal, wake_at=after(now, spec.wait_timeout))
        if record.waiting_for is not None:
            return await self._wait(spec, record)
        if record.wake_at is None:
            try:
                record = attrs.evolve(
                    record,
                    wake_at=await due_time(spec, spec.name, now, lambda: self._context(spec, record, 1)),
                )
            except Exception as exc:
                return self._failed(spec, record, started, ErrorInfo.from_exception(exc, step=spec.name))
        assert record.wake_at is not None
        remaining = (record.wake_at - now).total_seconds()
        if remaining > self.env.durable_after:
            return await self._suspend(attrs.evolve(record, status=StepStatus.SUSPENDED), "sleeping")
        if remaining > 0:
            self._put(record)
            await self._flush(status=RunStatus.RUNNING, wake_at=None)
            await self.env.clock.sleep(remaining)
        return self._complete(spec, record, None)

    async def _wait(self, spec: StepSpec, record: StepRecord) -> Outcome | StepRecord:
        storage, run_id, signal = self.env.storage, self.header.id, record.waiting_for
        assert signal is not None
        taken = await storage.take_signal(run_id, signal, record.seq)
        if taken is not None:
            return self._complete(spec, record, taken.payload)
        now = self.env.clock.now()
        if record.wake_at is not None and record.wake_at <= now:
            error = wait_timed_out(spec.name, signal, record.wake_at, record.attempts)
            return self._failed(spec, record, record.started_at or now, error)
        waiting = attrs.evolve(record, status=StepStatus.SUSPENDED)
        await self._suspend(waiting, f"waiting for signal {signal!r}")
        # A signal stored while the run was still marked running did not wake it: look again.
        taken = await storage.take_signal(run_id, signal, record.seq)
        if taken is None:
            return Outcome.SUSPENDED
        lease_until = self.env.clock.now() + self.env.lease
        claimed = await storage.claim(run_id, self.env.owner, lease_until, now=self.env.clock.now())
        if claimed is None:
            return Outcome.SUSPENDED  # another process resumed it and will take the same signal
        self.header = attrs.evolve(claimed, steps=())
        self._event(WorkflowResume, from_step=spec.name)
        return self._complete(spec, waiting, taken.payload)

    async def _suspend(self, record: StepRecord, reason: str) -> Outcome:
        """Store the run as suspended, holding no lease, due at the record's wake time."""
        self._put(record)
        self._event(StepSuspend, step=record.step, attempt=record.attempts, reason=reason)
        self._event(WorkflowSuspend, step=record.step, reason=reason)
        wake, deadline = record.wake_at, self.header.deadline_at
        if deadline is not None:
            wake = deadline if wake is None else min(wake, deadline)
        await self._flush(status=RunStatus.SUSPENDED, wake_at=wake, lease_expires_at=None)
        return Outcome.SUSPENDED

    def _failed(self, spec: StepSpec, record: StepRecord, started: datetime, error: ErrorInfo) -> StepRecord:
        now = self.env.clock.now()
        failed = attrs.evolve(
            record, status=StepStatus.FAILED, started_at=started, finished_at=now, error=error
        )
        self._put(failed)
        duration = (now - started).total_seconds()
        self._event(StepError, step=spec.name, attempt=failed.attempts, error=error, duration=duration)
        return failed

    def _context(
        self,
        spec: StepSpec,
        record: StepRecord,
        attempt: int,
        actions: Mapping[str, JSON] = EMPTY,
    ) -> StepContext[Any]:
        return StepContext(
            input=self.input,
            data=self.data,
            outputs=self._outputs_view,
            run_id=self.header.id,
            workflow=self.header.workflow,
            step=spec.name,
            attempt=attempt,
            actions=actions,
            recorder=self._record_action,
            seq=record.seq,
            log_sink=self.logbook.add,
        )

    async def _record_action(self, seq: int, step: str, name: str, value: JSON) -> None:
        check_json(value, f"the result of action {name!r} in step {step!r}", step=step)
        record = self.records[seq]
        self._put(attrs.evolve(record, actions={**record.actions, name: value}))
        await self._flush()

    async def _call(
        self, fn: Callable[..., Any], context: StepContext[Any], timeout: float, is_async: bool
    ) -> Any:
        return await call_handler(self.env.clock, self.env.executor, fn, context, timeout, is_async)

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
        if self.records and self.records[-1].status in _OPEN:
            last = self.records[-1]
            self._put(
                attrs.evolve(last, status=StepStatus.FAILED, error=error, finished_at=self.env.clock.now())
            )
        return await self._undo_or_finish(error, RunStatus.CANCELLED, compensate=compensate)

    async def _undo_or_finish(self, error: ErrorInfo, status: RunStatus, compensate: bool) -> RunResult:
        to_undo = compensable(self) if compensate else []
        if not to_undo:
            return await self._finish(status, error=error)
        self._event(RollbackStart, steps=tuple(r.step for r in to_undo), error=error)
        await self._flush(status=RunStatus.ROLLING_BACK, error=error)
        return await rollback(self, error)

    async def _finish(self, status: RunStatus, error: ErrorInfo | None = None) -> RunResult:
        now = self.env.clock.now()
        duration = (now - self.header.created_at).total_seconds()
        if status == RunStatus.COMPLETED:
            self._event(WorkflowComplete, duration=duration, outputs=dict(self.outputs))
        elif status == RunStatus.CANCELLED:
            self._event(WorkflowCancel, reason=error.message if error else None)
        else:
            self._event(WorkflowError, status=status.value, error=error, duration=duration)
        await self._flush(status=status, finished_at=now, error=error, lease_expires_at=None, wake_at=None)
        if self.env.hooks is not None:  # a child run wakes its parent
            await self.env.hooks.finished(self)
        return self.result()
