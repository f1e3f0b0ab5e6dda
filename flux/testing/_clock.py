"""FakeClock: time that moves only when told to."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import TracebackType

from flux.clock import Deadline


class FakeClock:
    """A clock for tests: sleeps, retry delays and timeouts complete without real waiting.

    With ``auto_advance=True`` (the default) a ``sleep`` moves the clock forward by its own
    duration at once, so retries and timers finish instantly. Timeouts fire when the clock moves
    past them: call ``await clock.advance(seconds)`` from the test (``await
    clock.wait_for_timers()`` first, to be sure the code under test has started waiting).

    >>> clock = FakeClock(start=datetime(2030, 1, 1, tzinfo=UTC))
    >>> clock.now().year
    2030
    """

    def __init__(self, start: datetime | None = None, *, auto_advance: bool = True) -> None:
        if start is not None and start.tzinfo is None:
            raise ValueError("FakeClock(start=...) needs a timezone-aware datetime (tzinfo=UTC)")
        self._now = start or datetime(2030, 1, 1, tzinfo=UTC)
        self.auto_advance = auto_advance
        self._timers: list[tuple[datetime, int, Callable[[], object]]] = []
        self._ids = itertools.count()
        self._cancelled: set[int] = set()
        self._changed = asyncio.Event()
        self._listeners: list[Callable[[], object]] = []
        self.slept: list[float] = []
        """Every duration passed to ``sleep``, in order (retry delays show up here)."""

    def now(self) -> datetime:
        return self._now

    async def sleep(self, seconds: float) -> None:
        seconds = max(0.0, float(seconds))
        self.slept.append(seconds)
        if self.auto_advance:
            await self.advance(seconds)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not future.done():
                future.set_result(None)

        self._schedule(seconds, wake)
        await future

    def timeout(self, seconds: float | None) -> Deadline:
        return _FakeDeadline(self, seconds)

    def subscribe(self, callback: Callable[[], object]) -> None:
        """Call ``callback()`` each time the clock moves (engines use it to wake workers)."""
        self._listeners.append(callback)

    @property
    def pending_timers(self) -> int:
        """Timers (sleeps and timeouts) waiting for the clock to reach them."""
        return sum(1 for _, tid, _ in self._timers if tid not in self._cancelled)

    @property
    def next_due(self) -> datetime | None:
        """When the earliest pending timer (a sleep or a deadline) falls due, or None."""
        live = [when for when, tid, _ in self._timers if tid not in self._cancelled]
        return min(live, default=None)

    async def wait_for_timers(self, count: int = 1) -> None:
        """Wait until at least ``count`` timers are pending (the code under test is waiting)."""
        while self.pending_timers < count:
            self._changed.clear()
            await self._changed.wait()

    async def advance(self, seconds: float | timedelta) -> None:
        """Move time forward, firing every timer that falls due, in order."""
        delta = seconds if isinstance(seconds, timedelta) else timedelta(seconds=seconds)
        if delta < timedelta(0):
            raise ValueError("FakeClock cannot go back in time")
        target = self._now + delta
        while self._timers and self._timers[0][0] <= target:
            when, tid, fire = heapq.heappop(self._timers)
            if tid in self._cancelled:
                self._cancelled.discard(tid)
                continue
            self._now = max(self._now, when)
            fire()
            for _ in range(3):
                await asyncio.sleep(0)
        self._now = target
        for listener in self._listeners:
            listener()
        await asyncio.sleep(0)

    def _cancel(self, timer: int) -> None:
        self._cancelled.add(timer)

    def _schedule(self, seconds: float, fire: Callable[[], object]) -> int:
        tid = next(self._ids)
        heapq.heappush(self._timers, (self._now + timedelta(seconds=seconds), tid, fire))
        self._changed.set()
        return tid


class _FakeDeadline:
    """A deadline that fires when a FakeClock reaches it (an ``asyncio.Timeout`` inside)."""

    def __init__(self, clock: FakeClock, seconds: float | None) -> None:
        self._clock = clock
        self._seconds = seconds
        self._inner = asyncio.timeout(None)
        self._timer: int | None = None

    async def __aenter__(self) -> _FakeDeadline:
        await self._inner.__aenter__()
        if self._seconds is not None:
            self._timer = self._clock._schedule(self._seconds, self._expire)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        if self._timer is not None:
            self._clock._cancel(self._timer)
        await self._inner.__aexit__(exc_type, exc, tb)
        return None

    def expired(self) -> bool:
        return self._inner.expired()

    def _expire(self) -> None:
        with contextlib.suppress(RuntimeError):  # already left: nothing to time out
            self._inner.reschedule(asyncio.get_running_loop().time())
