"""One visit of one step, for plans beyond a straight chain (``_flow.py`` schedules them).

It is the attempt loop of ``RunDriver._run_step`` (``when``, retries, timeouts, waits, sleeps),
changed in three ways so that visits can run side by side:

- each attempt sees its own copy of ``ctx.data``; its changes are committed to the run's data
  when the visit completes (concurrent steps must not write the same key);
- a visit that has to wait (a signal, a long sleep or retry delay, a child run) returns
  :class:`Suspended` instead of suspending the run: the flow suspends the run once nothing
  else can progress;
- a handler may return ``flux.goto(step)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import attrs

from flux.context import RunData, StepContext
from flux.control import Directive, Goto
from flux.engine import _keys
from flux.engine._attempt import maybe_await
from flux.errors import LeaseLostError, UnknownStepError
from flux.events import StepComplete, StepError, StepRetry, StepSkip, StepStart, StepSuspend
from flux.records import EMPTY, JSON, ErrorInfo, StepRecord, replay_data
from flux.serde import check_json, copy_json
from flux.status import RunStatus, StepStatus
from flux.waiting import WaitRequest

if TYPE_CHECKING:
    from flux.engine._driver import RunDriver
    from flux.plan import StepSpec

OPEN = (StepStatus.PENDING, StepStatus.RUNNING, StepStatus.SUSPENDED)
_REPLAYABLE = (StepStatus.COMPLETED, StepStatus.SKIPPED)


@attrs.frozen
class Done:
    """A visit (or a chain) finished; ``goto`` is where its handler asked to continue."""

    record: StepRecord | None
    goto: str | None = None


@attrs.frozen
class Failed:
    """A visit failed for good; ``record`` holds its error."""

    record: StepRecord


@attrs.frozen
class Suspended:
    """Visits that wait (for a signal, a time or a child run); the run suspends once idle."""

    records: tuple[StepRecord, ...]


Result = Done | Failed | Suspended


class ChildPending(Exception):
    """Raised by ``ctx.run_child`` when the child run has not finished: the visit suspends and
    its handler runs again (same attempt) once the child has ended."""

    def __init__(self, run_id: str, status: str) -> None:
        super().__init__(f"child run {run_id} is {status}")
        self.run_id = run_id


@attrs.frozen(kw_only=True)
class Call:
    """What a visit calls and how its outcome is published.

    ``name`` is the record's name (a step name, or ``map[i]`` for a map item); ``publish``
    puts the output in ``ctx.outputs``; ``targets`` are the steps a ``goto`` may name (None:
    goto is refused here, with ``no_goto`` as the reason).
    """

    name: str
    fn: Callable[..., Any]
    is_async: bool
    publish: bool = True
    targets: Mapping[str, int] | None = None
    no_goto: str = ""
    may_wait: bool = True


class Visitor:
    """Runs visits against a driver's records, data, events and storage."""

    def __init__(self, driver: RunDriver) -> None:
        self.d = driver
        self.env = driver.env

    # --- records --------------------------------------------------------------------------

    def new_record(self, name: str, actions: Mapping[str, JSON] = EMPTY) -> StepRecord:
        """Reserve the next seq for a new visit of ``name`` (pending)."""
        record = StepRecord(
            seq=len(self.d.records),
            step=name,
            status=StepStatus.PENDING,
            started_at=self.env.clock.now(),
            actions=actions,
        )
        self.d._put(record)
        return record

    def view(self) -> RunData:
        """A private copy of the run's data for one attempt."""
        return RunData(self.d.data)

    def context(
        self, name: str, record: StepRecord, attempt: int, data: RunData, failure: ErrorInfo | None = None
    ) -> StepContext[Any]:
        """The StepContext of one attempt of a visit."""
        d = self.d
        ctx: StepContext[Any] = StepContext(
            input=d.input,
            data=data,
            outputs=d._outputs_view,
            run_id=d.header.id,
            workflow=d.header.workflow,
            step=name,
            attempt=attempt,
            actions=d.records[record.seq].actions,
            recorder=d._record_action,
            seq=record.seq,
            log_sink=d.logbook.add,
        )
        if failure is not None:
            ctx._failure = failure
        return ctx

    def complete(
        self,
        record: StepRecord,
        output: JSON,
        data_set: Mapping[str, JSON],
        data_unset: tuple[str, ...],
        *,
        publish: bool = True,
        goto: str | None = None,
    ) -> StepRecord:
        """Mark a visit completed and commit its data changes and output."""
        d, now = self.d, self.env.clock.now()
        current = d.records[record.seq]
        actions = current.actions if goto is None else {**current.actions, _keys.GOTO: goto}
        done = StepRecord(
            seq=record.seq,
            step=record.step,
            status=StepStatus.COMPLETED,
            attempts=record.attempts,
            started_at=record.started_at or now,
            finished_at=now,
            output=output,
            data_set=data_set,
            data_unset=data_unset,
            condition=record.condition,
            actions=actions,
        )
        d._put(done)
        d.data.apply(data_set, data_unset)
        if publish and output is not None:
            d.outputs[record.step] = output
        if self.env.bus.wants(StepComplete.name):
            duration = (now - (record.started_at or now)).total_seconds()
            d._event(
                StepComplete, step=record.step, attempt=record.attempts, duration=duration, output=output
            )
        return done

    def fail(self, record: StepRecord, error: ErrorInfo) -> Failed:
        """Mark a visit failed for good."""
        d, now = self.d, self.env.clock.now()
        current = d.records[record.seq]
        started = record.started_at or now
        failed = attrs.evolve(
            record,
            status=StepStatus.FAILED,
            started_at=started,
            finished_at=now,
            error=error,
            actions=current.actions,
        )
        d._put(failed)
        d._event(
            StepError,
            step=record.step,
            attempt=failed.attempts,
            error=error,
            duration=(now - started).total_seconds(),
        )
        return Failed(failed)

    def suspended(self, record: StepRecord, reason: str, attempt: int | None = None) -> Suspended:
        """Mark a visit suspended (written by the next checkpoint)."""
        waiting = attrs.evolve(record, status=StepStatus.SUSPENDED)
        self.d._put(waiting)
        self.d._event(
            StepSuspend,
            step=record.step,
            attempt=record.attempts if attempt is None else attempt,
            reason=reason,
        )
        return Suspended((waiting,))

    def _skip(self, record: StepRecord) -> Done:
        skipped = attrs.evolve(
            record,
            status=StepStatus.SKIPPED,
            finished_at=self.env.clock.now(),
            condition=False,
            actions=self.d.records[record.seq].actions,
        )
        self.d._put(skipped)
        self.d._event(StepSkip, step=record.step, attempt=0)
        return Done(skipped)

    def _replayed(self, record: StepRecord, spec: StepSpec, call: Call) -> Done | None:
        """``engine.replay``: take the original run's visit instead of calling the step."""
        prior = None if self.d.recorded is None else self.d.recorded.get(call.name)
        if prior is None or prior.status not in _REPLAYABLE:
            return None
        if spec.commit and prior.status == StepStatus.COMPLETED:
            return None
        status = StepStatus.SKIPPED if prior.status == StepStatus.SKIPPED else StepStatus.COMPLETED
        again = attrs.evolve(prior, seq=record.seq, status=status)
        self.d._put(again)
        self.d.data.apply(prior.data_set, prior.data_unset)
        if call.publish and prior.output is not None:
            self.d.outputs[prior.step] = prior.output
        return Done(again, prior.actions.get(_keys.GOTO))

    # --- one visit ------------------------------------------------------------------------

    async def visit(
        self, spec: StepSpec, record: StepRecord | None, call: Call, failure: ErrorInfo | None = None
    ) -> Result:
        """Run one visit of ``spec`` (``record``: the open visit to continue, None for a new one)."""
        self.d.activity.enter()
        try:
            return await self._visit(spec, record, call, failure)
        finally:
            self.d.activity.leave()

    async def _visit(
        self, spec: StepSpec, record: StepRecord | None, call: Call, failure: ErrorInfo | None
    ) -> Result:
        d, clock = self.d, self.env.clock
        if record is None:
            record = self.new_record(call.name, {_keys.FAILURE: failure.to_json()} if failure else EMPTY)
            replayed = self._replayed(record, spec, call) if d.recorded is not None else None
            if replayed is not None:
                return replayed
        elif failure is None and _keys.FAILURE in record.actions:
            failure = ErrorInfo.from_json(record.actions[_keys.FAILURE])
        started = record.started_at or clock.now()
        if spec.when is not None and record.condition is None:
            try:
                ctx = self.context(call.name, record, 0, self.view(), failure)
                condition = bool(await maybe_await(spec.when(ctx)))
            except Exception as exc:
                return self.fail(record, ErrorInfo.from_exception(exc, step=call.name))
            if not condition:
                return self._skip(record)
            record = attrs.evolve(d.records[record.seq], condition=True)
            d._put(record)
        if spec.kind in ("sleep", "wait") or record.waiting_for is not None:
            from flux.engine._waits import pause

            return await pause(self, spec, record, started, call)
        if record.status == StepStatus.SUSPENDED and record.wake_at and record.wake_at > clock.now():
            return Suspended((record,))  # a stored retry delay, not due yet
        attempt = (
            record.attempts - 1
            if record.status == StepStatus.RUNNING and record.attempts
            else record.attempts
        )
        return await self._attempts(spec, record, started, attempt, call, failure)

    async def _attempts(
        self,
        spec: StepSpec,
        record: StepRecord,
        started: datetime,
        attempt: int,
        call: Call,
        failure: ErrorInfo | None,
    ) -> Result:
        d, clock, seq = self.d, self.env.clock, record.seq
        timeout = spec.timeout or self.env.default_timeout
        while True:
            attempt += 1
            actions = d.records[seq].actions
            if _keys.WAITING_CHILD in actions:
                actions = {k: v for k, v in actions.items() if k != _keys.WAITING_CHILD}
            record = StepRecord(
                seq=seq,
                step=call.name,
                status=StepStatus.RUNNING,
                attempts=attempt,
                started_at=started,
                condition=record.condition,
                actions=actions,
            )
            d._put(record)
            d._event(StepStart, step=call.name, attempt=attempt)
            await d._flush(status=RunStatus.RUNNING, wake_at=None)
            data = self.view()
            context = self.context(call.name, record, attempt, data, failure)
            goto: str | None = None
            try:
                output = await d._call(call.fn, context, timeout, call.is_async)
                if isinstance(output, Directive):
                    if isinstance(output, WaitRequest) and call.may_wait:
                        changed, removed = data.take_changes()
                        waiting = attrs.evolve(
                            d.records[seq],
                            waiting_for=output.signal,
                            wake_at=None
                            if output.timeout is None
                            else clock.now() + timedelta(seconds=output.timeout),
                            data_set=changed,
                            data_unset=removed,
                        )
                        from flux.engine._waits import pause

                        return await pause(self, spec, waiting, started, call)
                    goto, output = self._goto_target(output, call), None
                if output is not None:
                    check_json(output, f"the output of step {call.name!r}", step=call.name)
                data_set, data_unset = data.take_changes()
                for key, value in data_set.items():
                    check_json(value, f"ctx.data[{key!r}] (set by step {call.name!r})", step=call.name)
                output, data_set = copy_json(output), copy_json(data_set) if data_set else data_set
            except LeaseLostError:
                raise
            except ChildPending as pending:
                waiting = attrs.evolve(
                    d.records[seq],
                    status=StepStatus.SUSPENDED,
                    attempts=attempt - 1,  # the same attempt runs again once the child has ended
                    actions={**d.records[seq].actions, _keys.WAITING_CHILD: pending.run_id},
                )
                return self.suspended(waiting, f"waiting for child run {pending.run_id}", attempt)
            except Exception as exc:
                if data.take_changes()[0]:  # it may have changed shared lists or dicts in place
                    d.data.load(copy_json(replay_data(d.records)).items())
                error = ErrorInfo.from_exception(exc, step=call.name, attempt=attempt)
                record = d.records[seq]
                policy = self.env.policies(spec)
                if isinstance(exc, UnknownStepError) or not policy.should_retry(exc, attempt):
                    return self.fail(record, error)
                delay = policy.delay_after(exc, attempt)
                d._event(StepRetry, step=call.name, attempt=attempt, error=error, delay=delay)
                if delay > self.env.durable_after:
                    wake = clock.now() + timedelta(seconds=delay)
                    retry = attrs.evolve(record, error=error, wake_at=wake)
                    return self.suspended(retry, f"retry in {delay:g}s")
                d._put(attrs.evolve(record, error=error))
                await d._flush()
                await clock.sleep(delay)
                continue
            return Done(
                self.complete(record, output, data_set, data_unset, publish=call.publish, goto=goto), goto
            )

    def _goto_target(self, output: Directive, call: Call) -> str:
        if not isinstance(output, Goto):
            raise TypeError(
                f"step {call.name!r} returned {output!r}, but map items cannot wait; wait in a step "
                "before or after the map"
            )
        if call.targets is None:
            raise UnknownStepError(f"step {call.name!r} returned goto({output.step!r}), but {call.no_goto}")
        if output.step not in call.targets:
            raise UnknownStepError(
                f"step {call.name!r} returned goto({output.step!r}), which is not a step of its "
                f"chain (or not among its declared goto targets); it may jump to: "
                f"{', '.join(call.targets) or 'none'}"
            )
        return output.step
