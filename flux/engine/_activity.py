"""Which visits of a run are busy, so a visit waiting for a signal can wait in memory.

In a plan with side-by-side visits (parallel branches, graphs, map items), a visit that waits
for a signal need not stop its run while other visits still work: it waits here, woken by
each signal that arrives for the run, or once no other visit is busy. Once no other visit is busy it
gives up, and the run suspends as usual (a worker resumes it when its signal comes).
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime

from flux.clock import Clock


class Activity:
    """Counts the busy visits of one run and tells waiting visits when something changed."""

    def __init__(self) -> None:
        self.busy = 0
        self._changed = asyncio.Event()

    def enter(self) -> None:
        """A visit starts working."""
        self.busy += 1

    def leave(self) -> None:
        """A visit stops working (it ended, or it is about to wait).

        When none is left busy, waiting visits are told: they give up so the run can suspend.
        """
        self.busy -= 1
        if self.busy <= 0:
            self.poke()

    def poke(self) -> None:
        """Wake every waiting visit (a signal arrived, or no visit is busy any more)."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def token(self) -> asyncio.Event:
        """Take before looking for what you wait for; pass to :meth:`wait_for_news`, so a
        change that happens in between is not missed."""
        return self._changed

    async def wait_for_news(self, token: asyncio.Event, clock: Clock, until: datetime | None) -> bool:
        """Wait for a change since ``token`` was taken, while other visits are busy.

        Returns True when the caller should look again for what it waits for (something
        changed, or ``until`` passed); False when no other visit is busy: the caller suspends.
        """
        for _ in range(3):  # let sibling visits that were just launched start
            await asyncio.sleep(0)
        if self.busy <= 0:
            return False
        remaining = None if until is None else max(0.0, (until - clock.now()).total_seconds())
        with contextlib.suppress(TimeoutError):
            async with clock.timeout(remaining):
                await token.wait()
        return True
