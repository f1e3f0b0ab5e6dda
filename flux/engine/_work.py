"""What a worker needs of an engine: a small internal interface (:class:`WorkSource`).

The worker (``flux/worker.py``) finds candidate runs in storage; through this interface it
asks whether the engine drives one already, claims it, drives it, releases it, and waits
for news (a ``notify``) or the poll interval, on the engine's clock.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from typing import Any

import attrs

from flux.clock import Clock
from flux.plan import Workflow
from flux.records import RunRecord
from flux.result import RunResult


class TimeWaits:
    """Waits of the engine's own (heartbeat, polls, ``wait_result``) on the engine's clock.

    A clock that announces its moves (``subscribe``, as ``FakeClock`` does) is followed
    through those announcements instead of timers: a test that moves it by a week wakes
    each waiter once, where a timer per poll interval would fire thousands of times. Such a
    wait also ends after the same span of real time, so that nothing waits forever on a clock
    that no test moves (a poll then happens as it would on the real clock).
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._moved: asyncio.Event | None = None
        subscribe = getattr(clock, "subscribe", None)
        if callable(subscribe):
            self._moved = asyncio.Event()
            subscribe(self._on_move)

    def _on_move(self) -> None:
        assert self._moved is not None
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()

    async def wait(self, event: asyncio.Event, seconds: float | None) -> bool:
        """Wait until ``event`` is set or ``seconds`` pass on the clock; True if it was set."""
        if self._moved is None:
            with contextlib.suppress(TimeoutError):
                async with self.clock.timeout(seconds):
                    await event.wait()
            return event.is_set()
        until = None if seconds is None else self.clock.now() + timedelta(seconds=seconds)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):  # real time, as a last resort
                while not event.is_set() and (until is None or self.clock.now() < until):
                    await _either(event, self._moved)
        return event.is_set()


async def _either(first: asyncio.Event, second: asyncio.Event) -> None:
    waits = {asyncio.ensure_future(first.wait()), asyncio.ensure_future(second.wait())}
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()


@attrs.frozen(kw_only=True)
class WorkSource:
    """An engine, as its workers see it."""

    clock: Clock
    waits: TimeWaits
    wake: asyncio.Event
    poll_interval: float
    driving: Callable[[str], bool]
    """True while this engine drives the run, has claimed it, or keeps it in ``execute``."""
    plan_for: Callable[[RunRecord], Workflow[Any]]
    """The registered plan of a stored run (raises a RunError when there is none)."""
    claim: Callable[[RunRecord], Awaitable[RunRecord | None]]
    """Claim a stored run for this engine (None: someone else holds it)."""
    drive: Callable[[Workflow[Any], RunRecord, int | None], Coroutine[Any, Any, RunResult]]
    """Drive a claimed run on from where its records stand."""
    release: Callable[[str], Awaitable[None]]
    """Give up this engine's claim on a run."""

    def clear_news(self) -> None:
        """Forget the news so far: the worker is about to look at storage."""
        self.wake.clear()

    async def idle(self, seconds: float) -> None:
        """Wait for news (``engine.notify()``) since :meth:`clear_news`, or ``seconds``."""
        await self.waits.wait(self.wake, seconds)
