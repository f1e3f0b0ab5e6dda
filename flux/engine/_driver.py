"""Drives one run through its plan: run a step, checkpoint, emit its events, decide what's next.

The driver holds the run's state in memory while it runs. Every transition is written through
``Storage.checkpoint`` before the matching events go out; the completion of one step and the
start of the next share one checkpoint, so a plain step costs one write.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
from collections.abc import Callable
from concurrent.futures import Executor
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any

import attrs

from flux.clock import Clock
from flux.context import RunData, StepContext
from flux.errors import LeaseLostError, StepTimeoutError
from flux.events import (
    Event,
    EventBus,
    RollbackComplete,
    RollbackStart,
    StepCompensate,
    StepComplete,
    StepError,
    StepRetry,
    StepSkip,
    StepStart,
    WorkflowComplete,
    WorkflowError,
    WorkflowResume,
    WorkflowStart,
)
from flux.plan import StepSpec, Workflow, is_async_callable
from flux.records import JSON, ErrorInfo, RunRecord, StepRecord, replay_data, replay_outputs
from flux.result import RunResult
from flux.retry import RetryPolicy
from flux.serde import check_json
from flux.status import RunStatus, StepStatus
from flux.storage.protocol import Storage

_REPLAYABLE = (StepStatus.COMPLETED, StepStatus.SKIPPED, StepStatus.COMPENSATED)


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
        self.header = attrs.evolve(header, steps=()) if header.steps else header
        self.records = records
        self.data = RunData(replay_data(records))
        self.outputs: dict[str, JSON] = replay_outputs(records)
        self._outputs_view = MappingProxyType(self.outputs)
        self.input = typed_input
        self._pending: dict[int, StepRecord] = {}
        self._events: list[Event] = []
        self.recorded: dict[str, StepRecord] | None = None
        """On replay: the original run's latest visit of each step."""

    # --- bookkeeping ----------------------------------------------------------------------

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
        if record.seq == len(self.records):
            self.records.append(record)
        else:
            self.records[record.seq] = record
        self._pending[record.seq] = record

    async def _flush(self, **changes: Any) -> None:
        """Checkpoint the run's fields and the pending step records, then emit pending events."""
        now = self.env.clock.now()
        fields: dict[str, Any] = {"updated_at": now, "lease_expires_at": now + self.env.lease}
        fields.update(changes)
        self.header = attrs.evolve(self.header, **fields)
        pending, self._pending = self._pending, {}
        await self.env.storage.checkpoint(self.header, tuple(pending.values()))
        events, self._events = self._events, []
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
        )

    # --- the run --------------------------------------------------------------------------

    async def run(self, start: int, *, resumed_from: str | None = None) -> RunResult:
        """Run plan steps from index ``start`` to the end (or the first failure)."""
        if resumed_from is None:
            self._event(WorkflowStart)
        else:
            self._event(WorkflowResume, from_step=resumed_from)
        if self.header.status == RunStatus.ROLLING_BACK and self.header.error is not None:
            return await self._rollback(self.header.error)
        steps = self.workflow.steps
        for index in range(start, len(steps)):
            spec = steps[index]
            record = self._record_for(index)
            prior = None if self.recorded is None else self.recorded.get(spec.name)
            if prior is not None and prior.status in _REPLAYABLE:
                if not spec.commit or prior.status == StepStatus.SKIPPED:
                    self._reapply(prior)
                    continue
                record = attrs.evolve(record, condition=prior.condition)
            failed = await self._run_step(spec, record)
            if failed is not None:
                return await self._fail(failed)
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

    def _record_for(self, index: int) -> StepRecord:
        """The in-flight record of step ``index`` if the run stopped inside it, else a new visit."""
        name = self.workflow.steps[index].name
        if self.records:
            last = self.records[-1]
            if last.step == name and last.status == StepStatus.RUNNING:
                return last
        return StepRecord(seq=len(self.records), step=name, status=StepStatus.PENDING)

    async def _run_step(self, spec: StepSpec, record: StepRecord) -> StepRecord | None:
        """Run one step visit with its retries; returns its failed record, or None on success."""
        clock = self.env.clock
        started = record.started_at or clock.now()
        condition = record.condition
        if spec.when is not None and condition is None:
            try:
                condition = bool(await _maybe_await(spec.when(self._context(spec, record, 0))))
            except Exception as exc:
                return self._failed(spec, record, started, ErrorInfo.from_exception(exc, step=spec.name))
            if not condition:
                data_set, data_unset = self.data.take_changes()
                self._put(
                    StepRecord(
                        seq=record.seq,
                        step=spec.name,
                        status=StepStatus.SKIPPED,
                        started_at=started,
                        finished_at=clock.now(),
                        condition=False,
                        data_set=data_set,
                        data_unset=data_unset,
                    )
                )
                self._event(StepSkip, step=spec.name, attempt=0)
                return None
        policy = self.env.policies(spec)
        timeout = spec.timeout or self.env.default_timeout
        first = record.attempts
        attempt = first
        actions = dict(record.actions)
        while True:
            attempt += 1
            record = StepRecord(
                seq=record.seq,
                step=spec.name,
                status=StepStatus.RUNNING,
                attempts=attempt,
                started_at=started,
                condition=condition,
                actions=actions,
            )
            self._put(record)
            self._event(StepStart, step=spec.name, attempt=attempt)
            await self._flush(status=RunStatus.RUNNING)
            context = self._context(spec, record, attempt, actions)
            try:
                output = await self._call(spec.handler, context, timeout, spec.is_async)
                check_json(output, f"the output of step {spec.name!r}", step=spec.name)
                data_set, data_unset = self.data.take_changes()
                for key, value in data_set.items():
                    check_json(value, f"ctx.data[{key!r}] (set by step {spec.name!r})", step=spec.name)
            except LeaseLostError:
                raise
            except Exception as exc:
                error = ErrorInfo.from_exception(exc, step=spec.name, attempt=attempt)
                if not policy.should_retry(exc, attempt - first):
                    return self._failed(spec, record, started, error)
                delay = policy.delay_after(exc, attempt - first)
                self._put(attrs.evolve(record, error=error))
                self._event(StepRetry, step=spec.name, attempt=attempt, error=error, delay=delay)
                await self._flush()
                await clock.sleep(delay)
                continue
            now = clock.now()
            self._put(
                StepRecord(
                    seq=record.seq,
                    step=spec.name,
                    status=StepStatus.COMPLETED,
                    attempts=attempt,
                    started_at=started,
                    finished_at=now,
                    output=output,
                    data_set=data_set,
                    data_unset=data_unset,
                    condition=condition,
                    actions=actions,
                )
            )
            if output is not None:
                self.outputs[spec.name] = output
            if self.env.bus.wants(StepComplete.name):
                duration = (now - started).total_seconds()
                self._event(StepComplete, step=spec.name, attempt=attempt, duration=duration, output=output)
            return None

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
        actions: dict[str, JSON] | None = None,
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
            recorder=functools.partial(self._record_action, record.seq, spec.name),
        )

    async def _record_action(self, seq: int, step: str, name: str, value: JSON) -> None:
        check_json(value, f"the result of action {name!r} in step {step!r}", step=step)
        record = self.records[seq]
        self._put(attrs.evolve(record, actions={**record.actions, name: value}))
        await self._flush()

    async def _call(
        self, fn: Callable[..., Any], context: StepContext[Any], timeout: float, is_async: bool
    ) -> Any:
        deadline = self.env.clock.timeout(timeout)
        try:
            async with deadline:
                if is_async:
                    return await fn(context)
                loop = asyncio.get_running_loop()
                call = functools.partial(contextvars.copy_context().run, fn, context)
                return await _maybe_await(await loop.run_in_executor(self.env.executor(), call))
        except TimeoutError:
            if deadline.expired():
                kind = "async" if is_async else "sync (its thread was abandoned)"
                raise StepTimeoutError(
                    f"step {context.step!r} attempt {context.attempt} timed out after {timeout:g}s "
                    f"({kind}); raise its timeout= if it needs longer",
                    step=context.step,
                    attempt=context.attempt,
                ) from None
            raise

    # --- endings --------------------------------------------------------------------------

    async def _fail(self, failed: StepRecord) -> RunResult:
        error = failed.error
        assert error is not None
        to_undo = self._compensable()
        if not to_undo:
            return await self._finish(RunStatus.FAILED, error=error)
        self._event(RollbackStart, steps=tuple(r.step for r in to_undo), error=error)
        await self._flush(status=RunStatus.ROLLING_BACK, error=error)
        return await self._rollback(error)

    def _compensable(self) -> list[StepRecord]:
        """Completed visits whose step has a compensation, newest first."""
        steps = self.workflow.steps
        undoable = (StepStatus.COMPLETED, StepStatus.COMPENSATING)
        return [
            r
            for r in reversed(self.records)
            if r.status in undoable and steps[self.workflow.index_of(r.step)].compensate is not None
        ]

    async def _rollback(self, error: ErrorInfo) -> RunResult:
        for record in self._compensable():
            spec = self.workflow.steps[self.workflow.index_of(record.step)]
            self._put(attrs.evolve(record, status=StepStatus.COMPENSATING))
            await self._flush()
            try:
                await self._compensate(spec, record)
            except Exception as exc:
                comp_error = ErrorInfo.from_exception(exc, step=spec.name)
                self._put(attrs.evolve(record, status=StepStatus.FAILED, error=comp_error))
                self._event(StepCompensate, step=spec.name, attempt=record.attempts, error=comp_error)
                self._event(RollbackComplete, succeeded=False)
                return await self._finish(
                    RunStatus.FAILED, error=attrs.evolve(error, compensation=comp_error)
                )
            self._put(attrs.evolve(record, status=StepStatus.COMPENSATED))
            self._event(StepCompensate, step=spec.name, attempt=record.attempts)
        self._event(RollbackComplete, succeeded=True)
        return await self._finish(RunStatus.ROLLED_BACK, error=error)

    async def _compensate(self, spec: StepSpec, record: StepRecord) -> None:
        assert spec.compensate is not None
        policy = self.env.policies(spec)
        timeout = spec.timeout or self.env.default_timeout
        is_async = is_async_callable(spec.compensate)
        attempt = 0
        while True:
            attempt += 1
            context = self._context(spec, record, attempt, dict(record.actions))
            try:
                await self._call(spec.compensate, context, timeout, is_async)
                return
            except Exception as exc:
                if not policy.should_retry(exc, attempt):
                    raise
                await self.env.clock.sleep(policy.delay_after(exc, attempt))

    async def _finish(self, status: RunStatus, error: ErrorInfo | None = None) -> RunResult:
        now = self.env.clock.now()
        duration = (now - self.header.created_at).total_seconds()
        if status == RunStatus.COMPLETED:
            self._event(WorkflowComplete, duration=duration, outputs=dict(self.outputs))
        else:
            self._event(WorkflowError, status=status.value, error=error, duration=duration)
        await self._flush(status=status, finished_at=now, error=error, lease_expires_at=None)
        return self.result()


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value
