"""Wake-ups between processes: tell other engines' workers at once that work is there.

Without a waker, workers in other processes find new work by polling storage every
``poll_interval``. A :class:`Waker` carries a short message instead: a new pending run, a
signal, a cancellation request, a run that suspended with a due time. It holds no state: a lost
message or a lost connection only means the next poll finds the work.

``FluxEngine`` uses LISTEN/NOTIFY on its own with :class:`flux.storage.PostgresStorage`; for
several processes on one SQLite file, pass a :class:`RedisWaker`::

    engine = FluxEngine(storage=SQLiteStorage("flux.db"), waker=RedisWaker("redis://localhost:6379"))
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

__all__ = ["RedisWaker", "Waker", "WakerSource"]

logger = logging.getLogger("flux.wake")


@runtime_checkable
class Waker(Protocol):
    """Carries wake-ups between processes (the engine opens, publishes through and closes it)."""

    async def open(self, wake: Callable[[], None]) -> None:
        """Start listening: call ``wake()`` on every wake-up from any process, and once after
        each (re)connection (work may have arrived while disconnected)."""
        ...

    def publish(self, reason: str, run_id: str) -> None:
        """Tell every listening process that ``run_id`` needs a look (``reason``: ``run``,
        ``signal``, ``cancel`` or ``due``). Returns at once; failures are logged, never raised."""
        ...

    async def close(self) -> None:
        """Send what is queued, stop listening and release connections. Safe to call twice."""
        ...


@runtime_checkable
class WakerSource(Protocol):
    """A storage backend that brings its own waker (PostgresStorage: LISTEN/NOTIFY)."""

    def waker(self) -> Waker:
        """A new waker over the backend's own connection."""
        ...


class Outbox:
    """Messages queued by ``publish`` and sent by one background task at a time."""

    def __init__(self, send: Callable[[list[str]], Any]) -> None:
        self._send = send
        self._messages: list[str] = []
        self._task: asyncio.Task[None] | None = None

    def put(self, message: str) -> None:
        """Queue ``message``; start the sender if it is idle."""
        self._messages.append(message)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            while self._messages:
                batch, self._messages = self._messages, []
                try:
                    await self._send(batch)
                except Exception as exc:  # the receivers' polling finds the work instead
                    logger.debug("could not send %d wake-up(s): %r", len(batch), exc)
        finally:
            self._task = None

    async def flush(self) -> None:
        """Wait until everything queued was sent (or given up)."""
        while self._task is not None:
            await asyncio.shield(self._task)


async def keep_listening(listen: Callable[[asyncio.Event], Any], ready: asyncio.Event, what: str) -> None:
    """Run ``listen(ready)`` again and again with backoff: it connects, sets ``ready``, and
    returns or raises when the connection is lost. ``ready`` is also set after a failed first
    attempt, so that opening never waits for a server that is down."""
    pause = 0.05
    while True:
        try:
            await listen(ready)
            pause = 0.05
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.warning("wake-ups from %s lost (%r); polling until reconnected", what, exc)
        ready.set()
        await asyncio.sleep(pause)
        pause = min(pause * 2, 5.0)


class RedisWaker:
    """Wake-ups over Redis pub/sub (``pip install 'flux-workflow[redis]'``).

    Args:
        url: the Redis server, ``redis://host:6379/0``.
        channel: the pub/sub channel; engines sharing one database must use the same one.

    Redis holds no state here: losing it (or a message) only falls back to polling.

    >>> RedisWaker("redis://localhost:6379").channel
    'flux:wake'
    """

    def __init__(self, url: str, *, channel: str = "flux:wake") -> None:
        if not isinstance(url, str) or "://" not in url:
            raise ValueError(f"url must be a Redis URL like 'redis://localhost:6379/0', got {url!r}")
        if not isinstance(channel, str) or not channel:
            raise ValueError(f"channel must be a non-empty str, got {channel!r}")
        self.url = url
        self.channel = channel
        self._client: Any = None
        self._task: asyncio.Task[None] | None = None
        self._wake: Callable[[], None] = lambda: None
        self._outbox = Outbox(self._send)

    def __repr__(self) -> str:
        return f"RedisWaker({self.url.rpartition('@')[2]!r}, channel={self.channel!r})"

    async def open(self, wake: Callable[[], None]) -> None:
        """Subscribe to the channel; returns once subscribed (or after a first failed attempt)."""
        try:
            import redis.asyncio as redis
        except ImportError:
            raise ImportError("RedisWaker needs redis-py: pip install 'flux-workflow[redis]'") from None
        if self._task is not None:
            return
        self._wake = wake
        self._client = redis.Redis.from_url(self.url, health_check_interval=10, socket_connect_timeout=5)
        ready = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(keep_listening(self._listen, ready, repr(self)))
        await ready.wait()

    async def _listen(self, ready: asyncio.Event) -> None:
        pubsub = self._client.pubsub()
        try:
            await pubsub.subscribe(self.channel)
            ready.set()
            self._wake()  # whatever arrived while not subscribed
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    self._wake()
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    def publish(self, reason: str, run_id: str) -> None:
        """Queue a wake-up for every subscriber; sent in the background."""
        if self._client is not None:
            self._outbox.put(f"{reason} {run_id}")

    async def _send(self, messages: list[str]) -> None:
        for message in messages:
            await self._client.publish(self.channel, message)

    async def close(self) -> None:
        """Send queued wake-ups, unsubscribe and close the connection. Safe to call twice."""
        await self._outbox.flush()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
