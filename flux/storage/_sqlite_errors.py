"""SQLite failures as flux errors whose message says what is wrong and what to do."""

from __future__ import annotations

import sqlite3

import aiosqlite

from flux.errors import StorageCorruptedError, StorageError
from flux.storage._sqlite_ops import is_busy

# SQLite's primary result codes (the low byte of extended ones).
_READONLY, _CORRUPT, _FULL, _CANTOPEN, _NOTADB = 8, 11, 13, 14, 26


def translate(exc: sqlite3.Error, path: str, busy_timeout: float) -> StorageError:
    """The flux error for ``exc``, raised while using the database at ``path``."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    where = f"SQLite database {path!r}"
    if code in (_CORRUPT, _NOTADB):
        return StorageCorruptedError(
            f"{where} is not a SQLite database or is damaged ({exc}); point SQLiteStorage at a "
            "flux database or a new file name, or restore the file from a backup"
        )
    if code == _READONLY:
        return StorageError(
            f"{where} is read-only ({exc}): runs can be read but not written; make the file "
            "and its directory writable (SQLite needs the -wal and -shm files beside it)"
        )
    if is_busy(exc):
        return StorageError(
            f"{where} stayed locked for more than {busy_timeout:g}s ({exc}): another connection "
            "holds a long write transaction; find it, or raise busy_timeout="
        )
    if code == _CANTOPEN:
        return StorageError(f"cannot open {where} ({exc}): check that its directory exists and is writable")
    if code == _FULL:
        return StorageError(f"{where}: the disk is full ({exc}); free some space and retry")
    return StorageError(f"{where} failed: {exc}")


def check_versions() -> None:
    """Refuse, with the fix, a SQLite without UPSERT or an aiosqlite without ``_execute``."""
    if sqlite3.sqlite_version_info < (3, 24, 0):
        raise StorageError(
            f"SQLiteStorage needs SQLite 3.24 or newer; this Python links SQLite "
            f"{sqlite3.sqlite_version}: use a newer Python build"
        )
    if not callable(getattr(aiosqlite.Connection, "_execute", None)):
        raise StorageError(
            "SQLiteStorage runs its transactions through aiosqlite's Connection._execute, which "
            "this aiosqlite lacks: pip install 'aiosqlite>=0.20,<0.23'"
        )
