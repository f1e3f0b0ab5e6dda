"""Sleep and wait steps, and handlers that returned ``flux.wait``, for the visits of ``_visit.py``.

A wait takes its signal if it has come; otherwise the visit is :class:`Suspended` (the flow
suspends the run once nothing else can run). A sleep shorter than ``durable_after`` is slept
in memory; a longer one suspends the visit until its due time.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import attrs

from flux.engine._due import after, due_time, wait_timed_out
from flux.engine._visit import Call, Done, Result, Visitor
from flux.events import StepStart
from flux.records import ErrorInfo, StepRecord
from flux.status import RunStatus, StepStatus

if TYPE_CHECKING:
    from flux.plan import StepSpec


async def pause(
    visitor: Visitor, spec: StepSpec, record: StepRecord, started: datetime, call: Call
) -> Result:
    """Sleep and wait steps, and handlers that returned ``flux.wait``."""
    d, now = visitor.d, visitor.env.clock.now()
    if record.status == StepStatus.PENDING:
        record = attrs.evolve(record, status=StepStatus.RUNNING, attempts=1, started_at=started)
        d._event(StepStart, step=call.name, attempt=1)
    if record.waiting_for is None and spec.kind == "wait":
        record = attrs.evolve(record, waiting_for=spec.signal, wake_at=after(now, spec.wait_timeout))
    if record.waiting_for is not None:
        return await _wait(visitor, record, call)
    if record.wake_at is None:
        try:
            context = lambda: visitor.context(call.name, record, 1, visitor.view())  # noqa: E731
            record = attrs.evolve(record, wake_at=await due_time(spec, call.name, now, context))
        except Exception as exc:
            return visitor.fail(record, ErrorInfo.from_exception(exc, step=call.name))
    assert record.wake_at is not None
    remaining = (record.wake_at - now).total_seconds()
    if remaining > visitor.env.durable_after:
        return visitor.suspended(record, "sleeping")
    if remaining > 0:
        d._put(record)
        await d._flush(status=RunStatus.RUNNING, wake_at=None)
        await visitor.env.clock.sleep(remaining)
    return Done(
        visitor.complete(record, None, dict(record.data_set), record.data_unset, publish=call.publish)
    )


async def _wait(visitor: Visitor, record: StepRecord, call: Call) -> Result:
    signal = record.waiting_for
    assert signal is not None
    d, storage = visitor.d, visitor.env.storage
    published = False
    while True:
        token = d.activity.token()
        taken = await storage.take_signal(d.header.id, signal, record.seq)
        if taken is not None:
            data_set, data_unset = dict(record.data_set), record.data_unset
            return Done(visitor.complete(record, taken.payload, data_set, data_unset, publish=call.publish))
        if record.wake_at is not None and record.wake_at <= visitor.env.clock.now():
            return visitor.fail(record, wait_timed_out(call.name, signal, record.wake_at, record.attempts))
        if not published:  # checkpoint the wait, so its start is told before it waits
            d._put(record)
            await d._flush()
            published = True
        # A signal sent here pokes the run; one sent by another process is seen at the next poll.
        poll = visitor.env.clock.now() + timedelta(seconds=visitor.env.poll_interval)
        until = poll if record.wake_at is None else min(poll, record.wake_at)
        d.activity.leave()  # while it waits, this visit holds nobody up
        try:
            look_again = await d.activity.wait_for_news(token, visitor.env.clock, until)
        finally:
            d.activity.enter()
        if not look_again:
            return visitor.suspended(record, f"waiting for signal {signal!r}")
