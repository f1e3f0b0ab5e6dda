"""Copies the WAL back into the database file off the write path.

In WAL mode a commit appends pages to the ``-wal`` file; now and then a checkpoint copies them
into the database and fsyncs it. SQLite does that inside the commit that crosses the
``wal_autocheckpoint`` threshold, so one checkpoint in a few hundred waits milliseconds. Here a
second connection, on its own thread, runs a PASSIVE checkpoint after every few hundred
checkpoints written, while the writer goes on committing; the writer's own autocheckpoint stays
as a safety net at a higher threshold.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3

import aiosqlite

from flux.storage._sqlite_connect import connect

logger = logging.getLogger("flux.storage.sqlite")

EVERY = 400  # checkpoints written between two background WAL checkpoints
SAFETY_NET_PAGES = 8000  # the writer's own wal_autocheckpoint (pages of 4 KiB by default)


class WalCheckpointer:
    """Runs ``PRAGMA wal_checkpoint(PASSIVE)`` on its own connection every ``EVERY`` writes."""

    def __init__(self) -> None:
        self._db: aiosqlite.Connection | None = None
        self._written = 0
        self._task: asyncio.Task[None] | None = None

    async def open(self, database: str, uri: bool, busy_timeout: float) -> None:
        """Connect to the database (a file in WAL mode; do not call for ``:memory:``)."""
        self._db = await connect(database, uri=uri, timeout=busy_timeout)

    def written(self, count: int) -> None:
        """Note ``count`` checkpoints committed; start a WAL checkpoint when enough piled up."""
        self._written += count
        if self._written >= EVERY and self._task is None and self._db is not None:
            self._written = 0
            self._task = asyncio.get_running_loop().create_task(self._checkpoint(self._db))

    async def _checkpoint(self, db: aiosqlite.Connection) -> None:
        try:
            cursor = await db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            await cursor.close()
        except (sqlite3.Error, ValueError) as exc:  # the writer's autocheckpoint still works
            logger.debug("background WAL checkpoint failed: %s", exc)
        finally:
            self._task = None

    async def close(self) -> None:
        """Wait for a running WAL checkpoint, then close the connection."""
        task, db, self._db = self._task, self._db, None
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if db is not None:
            await db.close()
