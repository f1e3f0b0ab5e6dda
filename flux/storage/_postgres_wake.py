"""Wake-ups over PostgreSQL's LISTEN/NOTIFY, for engines sharing one PostgresStorage.

A connection of its own (not a pooled one, whose reset on release would end the LISTEN)
listens on the channel of the storage's schema and prefix; a lost one
(server restart, ``pg_terminate_backend``, a silent network) is noticed by its termination
callback or a periodic ping, replaced with backoff, and followed by a wake-up (a full poll).
Messages are sent with ``pg_notify`` on another pooled connection, batched; a stored signal
is announced by PostgresStorage itself, in the transaction that stores it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from flux.wake import Outbox, keep_listening

_PING_EVERY = 10.0  # seconds between liveness checks of the listening connection


class PostgresWaker:
    """A :class:`flux.wake.Waker` over LISTEN/NOTIFY; made by ``PostgresStorage.waker()``."""

    def __init__(
        self,
        connect: Callable[[], Any],
        acquire: Callable[[], Any],
        notify_sql: str,
        channel: str,
        where: str,
        announced: frozenset[str] = frozenset(),
    ) -> None:
        self._connect = connect
        self._acquire = acquire
        self._notify_sql = notify_sql
        self.channel = channel
        self._where = where
        self._announced = announced  # reasons the storage NOTIFYs itself as it commits
        self._wake: Callable[[], None] = lambda: None
        self._task: asyncio.Task[None] | None = None
        self._outbox = Outbox(self._send)

    def __repr__(self) -> str:
        return f"PostgresWaker({self._where}, channel={self.channel!r})"

    async def open(self, wake: Callable[[], None]) -> None:
        """LISTEN; returns once listening (or after a first failed attempt: then it retries)."""
        if self._task is not None:
            return
        self._wake = wake
        ready = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(keep_listening(self._listen, ready, repr(self)))
        await ready.wait()

    async def _listen(self, ready: asyncio.Event) -> None:
        lost = asyncio.Event()
        async with self._connect() as conn:
            conn.add_termination_listener(lambda _conn: lost.set())
            await conn.add_listener(self.channel, self._on_notify)
            ready.set()
            self._wake()  # whatever arrived while not listening
            while not lost.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_PING_EVERY):
                        await lost.wait()
                if not lost.is_set():
                    async with asyncio.timeout(_PING_EVERY):
                        await conn.execute("SELECT 1")

    def _on_notify(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        self._wake()

    def publish(self, reason: str, run_id: str) -> None:
        """Queue a NOTIFY for every listening engine; sent in the background (a stored
        signal was announced by the storage already, in the transaction that stored it)."""
        if self._task is not None and reason not in self._announced:
            self._outbox.put(f"{reason} {run_id}")

    async def _send(self, messages: list[str]) -> None:
        async with self._acquire() as conn:
            await conn.execute(self._notify_sql, self.channel, messages)

    async def close(self) -> None:
        """Send queued wake-ups, stop listening and give the connection back. Safe twice."""
        await self._outbox.flush()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
