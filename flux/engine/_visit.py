"""The one visit loop: every visit of every step, whatever the plan's shape, and compensations.

A visit evaluates the step's ``when`` once (the decision is recorded), then runs attempts
under the step's timeout and retry policy until one succeeds or the policy gives up. Sleep
and wait steps, and handlers that return ``flux.wait``, pause (``_waits.py``). A compensation
is a visit of the compensated step too: the same attempts, timeouts, retries, ``step_retry``
events and durable retry delays, recorded on the step's record (``compensating``).

The plan's shape changes what a visit costs, never what it does:

- a visit that runs alone works on the run's ``ctx.data`` directly; a visit beside others
  (parallel branches, graph steps, map items) works on a copy whose changes are merged when
  it completes. Either way a failed attempt's changes are dropped, a completed visit's are
  recorded;
- visits beside others tell the run's :class:`Activity` when they are busy, so that a sibling
  waiting for a signal can wait in memory while they work.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from types import CoroutineType

import attrs

from flux.context import RunData
from flux.control import Directive, Goto
from flux.engine._attempt import call_sync, maybe_await, resume_handler, within
from flux.engine._due import after
from flux.engine._keys import COMPENSATION, FAILURE, GOTO, WAITING_CHILD
from flux.engine._state import OPEN, ChildPending, Done, Failed, Result, RunState, Suspended
from flux.engine._waits import Call, pause
from flux.errors import LeaseLostError, UnknownStepError
from flux.events import StepRetry, StepStart
from flux.plan import StepSpec, is_async_callable
from flux.records import EMPTY, JSON, ErrorInfo, StepRecord, step_visit
from flux.serde import check_json, copy_checked, copy_json
from flux.status import RunStatus, StepStatus
from flux.waiting import WaitRequest

__all__ = ["OPEN", "Call", "Visitor"]

_REPLAYABLE = (StepStatus.COMPLETED, StepStatus.SKIPPED)


class Visitor:
    """Runs visits against one run's state (records, data, events, storage)."""

    def __init__(self, state: RunState) -> None:
        self.d = state
        self.env = state.env
        self.side_by_side = 0
        """Above 0 while visits may run beside each other (groups, maps, graphs)."""

    async def visit(
        self, spec: StepSpec, record: StepRecord | None, call: Call, failure: ErrorInfo | None = None
    ) -> Result:
        """Run one visit of ``spec`` (``record``: the open visit to continue, None for a new one)."""
        if not self.side_by_side:
            return await self._visit(spec, record, call, failure)
        activity = self.d.activity
        activity.enter()
        try:
            return await self._visit(spec, record, call, failure)
        finally:
            activity.leave()

    async def compensate(self, spec: StepSpec, record: StepRecord) -> Result:
        """Undo a completed visit of ``spec`` with its ``compensate``, attempts like a step's.

        Done: undone (the caller records it); Failed: the error that stopped it; Suspended:
        a retry delay longer than ``durable_after`` (the run waits for it durably).
        """
        assert spec.compensate is not None
        call = Call(name=record.step, fn=spec.compensate, is_async=is_async_callable(spec.compensate))
        done = record.actions.get(COMPENSATION)
        attempt = done if isinstance(done, int) else 0
        if record.status == StepStatus.COMPENSATING:
            if record.wake_at is not None and record.wake_at > self.env.clock.now():
                return Suspended((record,), "compensation retry delay")
            if record.wake_at is None and attempt:
                attempt -= 1  # stopped during that attempt (a crash): it runs again
        return await self._attempts(spec, call, record, attempt, None, compensating=True)

    # --- a visit ------------------------------------------------------------------------

    async def _visit(
        self, spec: StepSpec, record: StepRecord | None, call: Call, failure: ErrorInfo | None
    ) -> Result:
        d = self.d
        if record is None:
            prior = None if d.recorded is None else d.recorded.get(call.name)
            if prior is not None and prior.status in _REPLAYABLE:
                if not spec.commit or prior.status == StepStatus.SKIPPED:
                    return self._reapply(prior, call)
                # A commit step runs again on replay, under its recorded condition.
                record = attrs.evolve(d.new_record(call.name), condition=prior.condition)
                d.put(record)
            elif failure is None and spec.when is None and spec.kind not in ("sleep", "wait"):
                return await self._attempts(spec, call, None, 0, None)  # the common case
            else:
                record = d.new_record(call.name, {FAILURE: failure.to_json()} if failure else EMPTY)
        elif failure is None and FAILURE in record.actions:
            failure = ErrorInfo.from_json(record.actions[FAILURE])
        if spec.when is not None and record.condition is None:
            # The predicate sees a copy of ctx.data: what it writes there is dropped.
            try:
                context = d.context(call.name, record.seq, 0, d.copy_data(), failure)
                condition = bool(await maybe_await(spec.when(context)))
            except Exception as exc:
                return d.fail(record, ErrorInfo.from_exception(exc, step=call.name))
            if not condition:
                return d.skip(record)
            record = attrs.evolve(d.records[record.seq], condition=True)
            d.put(record)
        if spec.kind in ("sleep", "wait") or record.waiting_for is not None:
            return await pause(d, spec, record, call, beside_others=self.side_by_side > 0)
        if record.status == StepStatus.SUSPENDED and record.wake_at and record.wake_at > self.env.clock.now():
            return Suspended((record,), "retry delay")  # a stored retry delay, not due yet
        # A visit interrupted mid-attempt (a crash) runs that attempt again.
        attempt = (
            record.attempts - 1
            if record.status == StepStatus.RUNNING and record.attempts
            else record.attempts
        )
        return await self._attempts(spec, call, record, attempt, failure)

    def _reapply(self, prior: StepRecord, call: Call) -> Done:
        """``engine.replay``: take the original run's visit instead of calling the step."""
        d = self.d
        status = StepStatus.SKIPPED if prior.status == StepStatus.SKIPPED else StepStatus.COMPLETED
        again = attrs.evolve(prior, seq=len(d.records), status=status)
        d.put(again)
        d.data.apply(copy_json(dict(prior.data_set)), prior.data_unset)
        if call.publish and prior.output is not None:
            d.outputs[prior.step] = prior.output
        goto = prior.actions.get(GOTO)
        return Done(again, goto if isinstance(goto, str) else None)

    # --- the attempt loop ---------------------------------------------------------------

    async def _attempts(
        self,
        spec: StepSpec,
        call: Call,
        record: StepRecord | None,
        attempt: int,
        failure: ErrorInfo | None,
        *,
        compensating: bool = False,
    ) -> Result:
        """Attempts until one succeeds or the retry policy gives up: the only retry loop."""
        d, clock = self.d, self.env.clock
        alone = not self.side_by_side and not compensating  # else: a private copy of the data
        timeout = spec.timeout or self.env.default_timeout
        wants_start = self.env.bus.wants(StepStart.name)
        stamp = None
        if record is None:  # a new visit: its first record is the running one
            seq, handoff = len(d.records), d.handoff
            stamp = handoff[0] if alone and handoff is not None and handoff[1] == seq else clock.now()
            started, condition = stamp, None
        else:
            seq, started, condition = record.seq, record.started_at or clock.now(), record.condition
        while True:
            attempt += 1
            if compensating:
                current = d.records[seq]
                running = attrs.evolve(
                    current,
                    status=StepStatus.COMPENSATING,
                    wake_at=None,
                    actions={**current.actions, COMPENSATION: attempt},
                )
                d.put(running)
                now = await d.flush(status=RunStatus.ROLLING_BACK, wake_at=None)
            else:
                actions = d.records[seq].actions if seq < len(d.records) else EMPTY
                if WAITING_CHILD in actions:
                    actions = {k: v for k, v in actions.items() if k != WAITING_CHILD}
                running = step_visit(
                    seq, call.name, StepStatus.RUNNING, attempt, started, condition=condition, actions=actions
                )
                d.put(running)
                if wants_start:
                    d.event(StepStart, step=call.name, attempt=attempt)
                header = d.header
                if header.status is RunStatus.RUNNING and header.wake_at is None:
                    now = await d.flush(stamp)  # the common case: nothing else changes
                else:
                    now = await d.flush(stamp, status=RunStatus.RUNNING, wake_at=None)
                stamp = None
            data = d.data if alone else d.copy_data()
            context = d.context(call.name, seq, attempt, data, failure)
            try:
                if not call.is_async:
                    output = await call_sync(clock, self.env.executor, call.fn, context, timeout)
                elif type(coro := call.fn(context)) is not CoroutineType:
                    output = await within(clock, timeout, coro, context, timeout)  # an awaitable
                else:  # its first step, with no timer set (see _attempt.py)
                    try:
                        output = coro.send(None)
                    except StopIteration as finished:  # done without suspending: the usual case
                        output = finished.value
                    else:
                        output = await resume_handler(clock, coro, output, context, timeout, now)
                if compensating:
                    return Done(d.records[seq])
                goto: str | None = None
                if isinstance(output, Directive):
                    if isinstance(output, WaitRequest) and call.may_wait:
                        waiting = self._wait_record(seq, output, data, alone)
                        return await pause(d, spec, waiting, call, beside_others=self.side_by_side > 0)
                    goto, output = self._goto_target(output, call), None
                if output is not None:
                    output = _checked_output(output, call.name)  # a copy: the record owns it
                data_set, data_unset = data.take_changes()
                snapshot = _checked_changes(data_set, call.name) if data_set else data_set
            except LeaseLostError:
                raise
            except Exception as exc:
                if alone:
                    d.reload_data()  # a failed attempt leaves no data behind
                if isinstance(exc, ChildPending) and not compensating:
                    return self._wait_for_child(seq, attempt, exc)
                error = ErrorInfo.from_exception(exc, step=call.name, attempt=attempt)
                current = d.records[seq]  # with the actions this attempt recorded
                policy = self.env.policies(spec)
                if isinstance(exc, UnknownStepError) or not policy.should_retry(exc, attempt):
                    return (
                        Failed(attrs.evolve(current, error=error)) if compensating else d.fail(current, error)
                    )
                delay = policy.delay_after(exc, attempt)
                d.event(StepRetry, step=call.name, attempt=attempt, error=error, delay=delay)
                if delay > self.env.durable_after:
                    retry = attrs.evolve(current, error=error, wake_at=clock.now() + timedelta(seconds=delay))
                    if compensating:
                        return d.suspended(
                            retry, f"compensation retry in {delay:g}s", attempt, current.status
                        )
                    return d.suspended(retry, f"retry in {delay:g}s")
                d.put(attrs.evolve(current, error=error))
                await d.flush()
                await clock.sleep(delay)
                continue
            done = d.complete(
                running,
                output,
                snapshot,
                data_unset,
                merge=None if alone else data_set,
                publish=call.publish,
                goto=goto,
            )
            return Done(done, goto)

    def _wait_record(self, seq: int, request: WaitRequest, data: RunData, alone: bool) -> StepRecord:
        """A handler returned ``flux.wait``: its data changes wait with it (applied when the
        wait completes, not before)."""
        d = self.d
        changed, removed = data.take_changes()
        snapshot = _checked_changes(changed, d.records[seq].step) if changed else changed
        if alone and (changed or removed):
            d.reload_data()
        return attrs.evolve(
            d.records[seq],
            waiting_for=request.signal,
            wake_at=after(self.env.clock.now(), request.timeout),
            data_set=snapshot,
            data_unset=removed,
        )

    def _wait_for_child(self, seq: int, attempt: int, pending: ChildPending) -> Suspended:
        """``ctx.run_child``: the child has not ended; the same attempt runs again once it has."""
        current = self.d.records[seq]
        waiting = attrs.evolve(
            current,
            status=StepStatus.SUSPENDED,
            attempts=attempt - 1,
            wake_at=None,
            actions={**current.actions, WAITING_CHILD: pending.run_id},
        )
        return self.d.suspended(waiting, f"waiting for child run {pending.run_id}", attempt)

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


# Snapshots for the record, checked as they are copied: a later change in place must not
# rewrite what was recorded.


def _checked_output(output: JSON, step: str) -> JSON:
    """A copy of a step's output, once it is known to be storable JSON."""
    return copy_checked(output, lambda: check_json(output, f"the output of step {step!r}", step=step))


def _checked_changes(changes: Mapping[str, JSON], step: str) -> Mapping[str, JSON]:
    """A copy of the ``ctx.data`` values a step set, once they are known to be storable JSON."""

    def check() -> None:
        for key, value in changes.items():
            check_json(value, f"ctx.data[{key!r}] (set by step {step!r})", step=step)

    copy: Mapping[str, JSON] = copy_checked(changes, check)
    return copy
