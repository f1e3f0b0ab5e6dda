"""One run's state while it is driven: records, data, outputs, the pending checkpoint, events.

A visit's transitions (started, completed, failed, skipped, suspended) are put here and
written by the next :meth:`RunState.flush`, which checkpoints the run's fields and the pending
step records in one write, then emits the events gathered since the previous flush. So the
completion of one step and the start of the next share one checkpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from datetime import datetime, timedelta
from typing import Any, NamedTuple, Protocol

import attrs

from flux.clock import Clock
from flux.context import ChildRunner, DataCopy, RunData, RunScope, StepContext
from flux.engine import _logs
from flux.engine._activity import Activity
from flux.engine._keys import GOTO
from flux.engine._logbook import LogBook, LogLimits
from flux.events import Event, EventBus, StepComplete, StepFailed, StepSkip, StepSuspend
from flux.plan import StepSpec, Workflow
from flux.records import (
    EMPTY,
    JSON,
    ErrorInfo,
    RunRecord,
    StepRecord,
    checkpointed,
    replay_data,
    replay_outputs,
    revise,
    step_visit,
)
from flux.result import RunResult
from flux.retry import RetryPolicy
from flux.serde import check_json, copy_json
from flux.status import StepStatus
from flux.storage.protocol import Storage

OPEN = (StepStatus.PENDING, StepStatus.RUNNING, StepStatus.SUSPENDED)


class RunHooks(Protocol):
    """What a run calls at its end and at its cancellation (the engine links child runs)."""

    async def finished(self, state: RunState) -> None:
        """The run ended."""

    async def cancelled(self, state: RunState, error: ErrorInfo) -> None:
        """The run is being cancelled (its open visits fail with ``error``)."""


@attrs.define(kw_only=True)
class EngineContext:
    """What every run of one engine shares."""

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
    children: ChildRunner | None = None
    """What ``ctx.run_child`` calls."""
    log_limits: LogLimits = attrs.field(factory=LogLimits)
    """How much of ``ctx.log`` each step visit keeps."""


# --- how a visit ended ------------------------------------------------------------------------


# Plain tuples: one of these is made per visit, so they are cheap to make.


class Done(NamedTuple):
    """A visit (or a chain) finished; ``goto`` is where its handler asked to continue."""

    record: StepRecord | None
    goto: str | None = None


class Failed(NamedTuple):
    """A visit failed for good; ``record`` holds its error."""

    record: StepRecord


class Suspended(NamedTuple):
    """Visits that wait (for a signal, a time or a child run); the run suspends once idle.

    ``reason`` says why, for the ``workflow_suspend`` event.
    """

    records: tuple[StepRecord, ...]
    reason: str

    @staticmethod
    def of(waiting: list[Suspended]) -> Suspended:
        """Several waiting strands as one."""
        if len(waiting) == 1:
            return waiting[0]
        records = tuple(r for w in waiting for r in w.records)
        names = sorted({r.step for r in records})
        more = f" and {len(names) - 5} more" if len(names) > 5 else ""
        return Suspended(records, "waiting: " + ", ".join(names[:5]) + more)


Result = Done | Failed | Suspended


class ChildPending(Exception):
    """Raised by ``ctx.run_child`` when the child run has not finished: the visit suspends and
    its handler runs again (same attempt) once the child has ended."""

    def __init__(self, run_id: str, status: str) -> None:
        super().__init__(f"child run {run_id} is {status}")
        self.run_id = run_id


# --- the run --------------------------------------------------------------------------------


class RunState:
    """The records, data and outputs of one run, and what its next checkpoint writes."""

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
        self.header = header
        """The run's own fields as last checkpointed (without step records)."""
        self.set_header(header)
        self.records = records
        self.data = RunData(copy_json(replay_data(records)))
        self._base: tuple[Mapping[str, JSON], int] | None = None  # see restart_from
        self.outputs: dict[str, JSON] = replay_outputs(records)
        """Read only through copies (``ctx.outputs``, results, events): may share records' values."""
        self.input = typed_input
        self.pending: dict[int, StepRecord] = {}
        self.handoff: tuple[datetime, int] | None = None
        """When the last visit completed, and the number of records then: a visit started
        right after (nothing recorded in between) starts at that same time."""
        self._events: list[Event] = []
        self.recorded: dict[str, StepRecord] | None = None
        """On replay: the original run's latest visit of each step."""
        self.cancel_request: dict[str, JSON] | None = None
        self.activity = Activity()
        """Busy visits of a flow; a signal for this run pokes it (see ``_activity.py``)."""
        self.logbook = LogBook(records, env.log_limits, env.clock.now)
        """Lines logged through ``ctx.log``, attached to their visits' records by ``put``."""
        self.scope = RunScope(
            typed_input,
            self.outputs,
            header.id,
            header.workflow,
            self.record_action,
            env.children,
            self.logbook.add,
        )
        """What the step contexts of this run share."""

    def set_header(self, value: RunRecord) -> None:
        """Take the run's fields from ``value`` (a claimed or loaded run); its steps are not kept."""
        self.header = revise(value, steps=()) if value.steps else value

    def event(self, cls: type[Event], **fields: Any) -> None:
        """Queue an event; it is emitted after the next checkpoint (if anyone listens)."""
        if self.env.bus.wants(cls.name):
            self._events.append(
                cls(
                    run_id=self.header.id,
                    workflow=self.header.workflow,
                    timestamp=self.env.clock.now(),
                    **fields,
                )
            )

    def put(self, record: StepRecord) -> None:
        """Set a visit's record (a new one at the end); written by the next checkpoint."""
        if record.seq in self.logbook.visits:
            record = self.logbook.attach(record)
        if record.seq == len(self.records):
            self.records.append(record)
        else:
            self.records[record.seq] = record
        self.pending[record.seq] = record

    async def flush(self, at: datetime | None = None, **changes: Any) -> datetime:
        """Checkpoint the run's fields (with ``changes``) and the pending records, then emit
        the pending events; returns the time of the checkpoint. ``at`` is the time of the
        transition when the caller has just read the clock."""
        now = at or self.env.clock.now()
        self.header = checkpointed(self.header, now, now + self.env.lease, changes)
        pending, self.pending = self.pending, {}
        # Taken with the records: concurrent visits' events wait for their own checkpoints.
        events: list[Event] | tuple[()] = self._events
        if events:
            self._events = []
        else:
            events = ()  # not the list itself: visits beside this one may add to it meanwhile
        written = tuple(pending.values())
        if _logs.logger.isEnabledFor(logging.DEBUG):
            _logs.checkpoint(self.header, written)
        try:
            await self.env.storage.checkpoint(self.header, written)
        except BaseException:
            self.pending = {**pending, **self.pending}  # written again by the next checkpoint
            self._events = [*events, *self._events]
            raise
        for event in events:
            await self.env.bus.emit(event)
        return now

    def result(self) -> RunResult:
        """The run's state as a frozen result (its data and outputs are copies)."""
        header = self.header
        return RunResult(
            id=header.id,
            workflow=header.workflow,
            status=header.status,
            data=copy_json(self.data.snapshot()),
            outputs=copy_json(self.outputs),
            history=tuple(self.records),
            error=header.error,
            duration=header.duration,
            input=header.input,
            created_at=header.created_at,
            finished_at=header.finished_at,
            labels=dict(header.labels),
        )

    def reload_data(self) -> None:
        """Back to the data the records hold (a failed attempt's changes are dropped)."""
        if self._base is None:
            self.data.load(copy_json(replay_data(self.records)).items())
        else:
            base, start = self._base
            self.data.load(copy_json(replay_data(self.records[start:], base)).items())

    def restart_from(self, data: Mapping[str, JSON]) -> None:
        """``resume(from_step=X)``: the run goes on from ``data``, the data as it was before X
        first ran; the visits recorded so far no longer count, however often an attempt fails."""
        self._base = (data, len(self.records))
        self.data.load(copy_json(data).items())

    def context(
        self, name: str, seq: int, attempt: int, data: RunData, failure: ErrorInfo | None = None
    ) -> StepContext[Any]:
        """The :class:`StepContext` of one attempt of visit ``seq``."""
        actions = self.records[seq].actions if seq < len(self.records) else EMPTY
        return StepContext.of(self.scope, name, seq, attempt, data, actions, failure)

    def copy_data(self) -> DataCopy:
        """A private copy of the run's data (a step beside others, a predicate, a compensation)."""
        return DataCopy(self.data)

    async def record_action(self, seq: int, step: str, name: str, value: JSON) -> None:
        """Store an action's result on visit ``seq`` at once (``ctx.action``)."""
        check_json(value, f"the result of action {name!r} in step {step!r}", step=step)
        record = self.records[seq]
        self.put(attrs.evolve(record, actions={**record.actions, name: copy_json(value)}))
        await self.flush()

    # --- a visit's transitions ------------------------------------------------------------

    def new_record(self, name: str, actions: Mapping[str, JSON] = EMPTY) -> StepRecord:
        """Reserve the next seq for a new visit of ``name`` (pending)."""
        record = StepRecord(
            seq=len(self.records),
            step=name,
            status=StepStatus.PENDING,
            started_at=self.env.clock.now(),
            actions=actions,
        )
        self.put(record)
        return record

    def complete(
        self,
        record: StepRecord,
        output: JSON,
        data_set: Mapping[str, JSON] = EMPTY,
        data_unset: tuple[str, ...] = (),
        *,
        merge: Mapping[str, JSON] | None = None,
        publish: bool = True,
        goto: str | None = None,
    ) -> StepRecord:
        """Mark a visit completed with its output and data changes (snapshots the record owns).

        ``merge`` is what to set in the run's data (with ``data_unset`` removed); None when
        the changes are there already (the visit worked on the run's data itself).
        """
        now = self.env.clock.now()
        current = self.records[record.seq]
        actions = current.actions
        if goto is not None:
            actions = {**actions, GOTO: goto}
        done = step_visit(
            record.seq,
            record.step,
            StepStatus.COMPLETED,
            record.attempts,
            record.started_at or now,
            now,
            output,
            data_set,
            data_unset,
            record.condition,
            actions,
        )
        self.put(done)
        self.handoff = (now, len(self.records))
        if merge is not None:
            self.data.apply(merge, data_unset)
        if publish and output is not None:
            self.outputs[record.step] = output
        if self.env.bus.wants(StepComplete.name):
            duration = (now - (record.started_at or now)).total_seconds()
            self.event(
                StepComplete,
                step=record.step,
                attempt=record.attempts,
                duration=duration,
                output=copy_json(output),
            )
        return done

    def fail(self, record: StepRecord, error: ErrorInfo) -> Failed:
        """Mark a visit failed for good."""
        now = self.env.clock.now()
        started = record.started_at or now
        failed = attrs.evolve(
            record,
            status=StepStatus.FAILED,
            started_at=started,
            finished_at=now,
            error=error,
            actions=self.records[record.seq].actions,
        )
        self.put(failed)
        self.event(
            StepFailed,
            step=record.step,
            attempt=failed.attempts,
            error=error,
            duration=(now - started).total_seconds(),
        )
        return Failed(failed)

    def skip(self, record: StepRecord) -> Done:
        """Mark a visit skipped (its ``when`` was false)."""
        skipped = attrs.evolve(
            record,
            status=StepStatus.SKIPPED,
            finished_at=self.env.clock.now(),
            condition=False,
            actions=self.records[record.seq].actions,
        )
        self.put(skipped)
        self.event(StepSkip, step=record.step, attempt=0)
        return Done(skipped)

    def suspended(
        self,
        record: StepRecord,
        reason: str,
        attempt: int | None = None,
        status: StepStatus = StepStatus.SUSPENDED,
    ) -> Suspended:
        """Mark a visit suspended (written by the next checkpoint)."""
        waiting = attrs.evolve(record, status=status)
        self.put(waiting)
        self.event(
            StepSuspend,
            step=record.step,
            attempt=record.attempts if attempt is None else attempt,
            reason=reason,
        )
        return Suspended((waiting,), reason)
