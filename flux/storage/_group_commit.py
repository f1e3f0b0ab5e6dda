"""Group commit, shared by the SQLite and PostgreSQL backends: checkpoints that arrive while one
is being written are queued and written together by the next write.

The backend gives a ``write(items) -> outcomes`` function (one outcome per item: None, or the
exception that item's caller gets); each caller returns once its own checkpoint committed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

ItemT = TypeVar("ItemT")
Outcome = BaseException | None


class GroupCommit(Generic[ItemT]):
    """Writes items through ``write``, at most one batch at a time; callers that arrive
    meanwhile share the next batch. Each caller returns once its own item committed."""

    def __init__(self, write: Callable[[Sequence[ItemT]], Awaitable[list[Outcome]]]) -> None:
        self._write = write
        self._queue: list[tuple[ItemT, asyncio.Future[None]]] = []
        self._busy = False  # a write is in flight
        self._idle: list[asyncio.Future[None]] = []  # wait_idle callers (few: close() waits)
        self._drainer: asyncio.Task[None] | None = None  # kept: the loop holds tasks weakly

    async def submit(self, item: ItemT) -> None:
        """Write ``item``; raises its own outcome (LeaseLostError, StorageError)."""
        if self._busy:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._queue.append((item, future))
            await future
            return
        # Idle: write at once; items arriving meanwhile queue up for the next batch.
        self._busy = True
        try:
            outcome = (await self._write([item]))[0]
        finally:
            self._next_batch()
        if outcome is not None:
            raise outcome

    async def wait_idle(self) -> None:
        """Return once every queued item has been written."""
        if self._busy:
            idle: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._idle.append(idle)
            await idle

    def _now_idle(self) -> None:
        self._busy = False
        if self._idle:
            waiters, self._idle = self._idle, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def _next_batch(self) -> None:
        if self._queue:
            self._drainer = asyncio.get_running_loop().create_task(self._drain())
        else:
            self._now_idle()

    async def _drain(self) -> None:
        """Write queued items, everything pending in one batch, until none is left."""
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    outcomes = await self._write([item for item, _ in batch])
                except Exception as exc:
                    outcomes = [exc] * len(batch)
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if future.done():  # its caller was cancelled
                        continue
                    if outcome is None:
                        future.set_result(None)
                    else:
                        future.set_exception(outcome)
        finally:
            for _, future in self._queue:
                future.cancel()
            self._queue = []
            self._drainer = None
            self._now_idle()
