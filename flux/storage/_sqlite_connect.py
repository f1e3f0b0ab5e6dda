"""Open aiosqlite connections that never keep the process alive at exit."""

from __future__ import annotations

import threading

import aiosqlite


async def connect(database: str, *, uri: bool, timeout: float) -> aiosqlite.Connection:
    """``aiosqlite.connect`` in autocommit mode, its worker thread made a daemon.

    aiosqlite runs each connection on a thread of its own that Python waits for at exit, so a
    storage nobody closed (no ``async with``, no ``close()``) would hold the process forever. As a
    daemon the thread is dropped at exit instead; nothing is lost, since every write was
    committed before its caller went on.
    """
    connection = aiosqlite.connect(database, uri=uri, isolation_level=None, timeout=timeout)
    # aiosqlite 0.22 keeps the thread in ``_thread``; before that the connection is the thread.
    thread: object = getattr(connection, "_thread", connection)
    if isinstance(thread, threading.Thread):
        thread.daemon = True
    return await connection
