"""Sleep and wait steps, and handlers that returned ``flux.wait``: how a visit pauses.

A wait takes its signal if it has come; otherwise the visit is :class:`Suspended` (the flow
suspends the run once nothing else can run), or, beside busy siblings, it waits in memory
until a signal pokes the run. A sleep shorter than ``durable_after`` is slept in memory; a
longer one suspends the visit until its due time. A handler's data changes made before
``flux.wait`` are recorded with the wait and applied when it completes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, NamedTuple

import attrs

from flux.engine._due import after, due_time, wait_timed_out
from flux.engine._state import Done, Result, RunState
from flux.events import StepStart
from flux.plan import StepSpec
from flux.records import JSON, ErrorInfo, StepRecord
from flux.serde import copy_json
from flux.status import RunStatus, StepStatus


class Call(NamedTuple):
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
    plain: bool = False
    """A step with no ``when``, not replayed: a new visit goes straight to its attempts."""


async def pause(
    d: RunState, spec: StepSpec, record: StepRecord, call: Call, *, beside_others: bool
) -> Result:
    """Sleep and wait steps, and handlers that returned ``flux.wait``."""
    now = d.env.clock.now()
    if record.status == StepStatus.PENDING:
        record = attrs.evolve(
            record, status=StepStatus.RUNNING, attempts=1, started_at=record.started_at or now
        )
        d.event(StepStart, step=call.name, attempt=1)
    if record.waiting_for is None and spec.kind == "wait":
        record = attrs.evolve(record, waiting_for=spec.signal, wake_at=after(now, spec.wait_timeout))
    if record.waiting_for is not None:
        return await _wait(d, record, call, beside_others)
    if record.wake_at is None:
        current = record
        try:
            context = lambda: d.context(call.name, current.seq, 1, d.copy_data())  # noqa: E731
            record = attrs.evolve(record, wake_at=await due_time(spec, call.name, now, context))
        except Exception as exc:
            return d.fail(record, ErrorInfo.from_exception(exc, step=call.name))
    assert record.wake_at is not None
    remaining = (record.wake_at - now).total_seconds()
    if remaining > d.env.durable_after:
        return d.suspended(record, "sleeping")
    if remaining > 0:
        d.put(record)
        await d.flush(status=RunStatus.RUNNING, wake_at=None)
        await d.env.clock.sleep(remaining)
    return Done(_complete(d, record, None, call))


def _complete(d: RunState, record: StepRecord, output: JSON, call: Call) -> StepRecord:
    """Complete a pause, applying the data changes its handler made before it waited."""
    merge: Mapping[str, JSON] = copy_json(dict(record.data_set)) if record.data_set else {}
    return d.complete(record, output, record.data_set, record.data_unset, merge=merge, publish=call.publish)


async def _wait(d: RunState, record: StepRecord, call: Call, beside_others: bool) -> Result:
    signal = record.waiting_for
    assert signal is not None
    clock, storage = d.env.clock, d.env.storage
    published = False
    while True:
        token = d.activity.token()
        taken = await storage.take_signal(d.header.id, signal, record.seq)
        if taken is not None:
            return Done(_complete(d, record, taken.payload, call))
        if record.wake_at is not None and record.wake_at <= clock.now():
            return d.fail(record, wait_timed_out(call.name, signal, record.wake_at, record.attempts))
        if not beside_others:
            return d.suspended(record, f"waiting for signal {signal!r}")
        if not published:  # checkpoint the wait, so its start is told before it waits
            d.put(record)
            await d.flush()
            published = True
        # A signal sent here pokes the run; one sent by another process is seen at the next poll.
        poll = clock.now() + timedelta(seconds=d.env.poll_interval)
        until = poll if record.wake_at is None else min(poll, record.wake_at)
        d.activity.leave()  # while it waits, this visit holds nobody up
        try:
            look_again = await d.activity.wait_for_news(token, clock, until)
        finally:
            d.activity.enter()
        if not look_again:
            return d.suspended(record, f"waiting for signal {signal!r}")
