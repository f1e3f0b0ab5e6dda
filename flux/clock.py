"""Time, injected: the engine reads the time, sleeps and bounds attempts only through a Clock.

:class:`SystemClock` is the real one. ``flux.testing.FakeClock`` moves only when told to, which
makes retry delays, timeouts and timers instant in tests.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from types import TracebackType
from typing import Protocol, runtime_checkable


class Deadline(Protocol):
    """An async context manager that cancels its body when time runs out (``TimeoutError``).

    ``asyncio.Timeout`` is one.
    """

    async def __aenter__(self) -> object: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None: ...

    def expired(self) -> bool:
        """True once the deadline has fired."""
        ...


@runtime_checkable
class Clock(Protocol):
    """What the engine needs of time."""

    def now(self) -> datetime:
        """The current wall-clock time, timezone-aware (UTC)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds``."""
        ...

    def timeout(self, seconds: float | None) -> Deadline:
        """A :class:`Deadline` that cancels its body after ``seconds`` (``TimeoutError``).

        ``None`` means no limit.
        """
        ...


class SystemClock:
    """The real clock: ``datetime.now(UTC)``, ``asyncio.sleep`` and ``asyncio.timeout``."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def timeout(self, seconds: float | None) -> Deadline:
        return _LoopDeadline(seconds)


class _LoopDeadline:
    """A lean ``asyncio.timeout``: one loop timer that cancels the task when it fires.

    Steps enter one per attempt, so it is on the hot path; it does what ``asyncio.Timeout``
    does for a single, never-rescheduled deadline.
    """

    __slots__ = ("_expired", "_handle", "_seconds", "_task")

    def __init__(self, seconds: float | None) -> None:
        self._seconds = seconds
        self._handle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[object] | None = None
        self._expired = False

    async def __aenter__(self) -> _LoopDeadline:
        if self._seconds is not None:
            self._task = asyncio.current_task()
            self._handle = asyncio.get_running_loop().call_later(self._seconds, self._fire)
        return self

    def _fire(self) -> None:
        self._expired = True
        if self._task is not None:
            self._task.cancel()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        if self._handle is not None:
            self._handle.cancel()
        # Our cancellation, and nobody else's: turn it into a TimeoutError.
        expired = self._expired and self._task is not None and self._task.uncancel() == 0
        if expired and exc_type is asyncio.CancelledError:
            raise TimeoutError from exc
        return None

    def expired(self) -> bool:
        return self._expired
