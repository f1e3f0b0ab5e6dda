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
        return asyncio.timeout(seconds)
