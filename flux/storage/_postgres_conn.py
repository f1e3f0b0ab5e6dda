"""PostgreSQL connections for PostgresStorage: opening a pool, naming the server in errors,
and riding out lost connections.

asyncpg is imported here and only here, on first use, so ``import flux.storage`` works without
it; a missing driver raises an error naming the ``pip install`` to run.
"""

from __future__ import annotations

import asyncio
import logging
import os
import urllib.parse
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any, TypeVar

from flux.errors import StorageError

logger = logging.getLogger("flux.storage.postgres")

T = TypeVar("T")

RECONNECT_FOR = 60.0
"""Seconds a call keeps retrying while the server cannot be reached (a restart, a failover)."""


def driver() -> ModuleType:
    """The asyncpg module, or a StorageError that says how to install it."""
    try:
        import asyncpg as module
    except ImportError:
        raise StorageError(
            "PostgresStorage needs the asyncpg driver: pip install 'flux-workflow[postgres]'"
        ) from None
    loaded: ModuleType = module
    return loaded


def describe(dsn: str | None) -> tuple[str, str | None]:
    """``("database 'db' on host:port", password)`` for messages; the password is never shown."""
    parts = urllib.parse.urlsplit(dsn or "")
    query = urllib.parse.parse_qs(parts.query)
    try:
        host = parts.hostname or query.get("host", [""])[0] or os.environ.get("PGHOST", "localhost")
        port = parts.port or int(query.get("port", [""])[0] or os.environ.get("PGPORT", "5432"))
    except ValueError:
        host, port = parts.netloc.rpartition("@")[2] or "localhost", 5432
    user = parts.username or os.environ.get("PGUSER") or "the current user"
    database = urllib.parse.unquote(parts.path.lstrip("/")) or os.environ.get("PGDATABASE") or user
    return f"PostgreSQL database {database!r} on {host}:{port}", parts.password


def _redact(text: str, password: str | None) -> str:
    return text.replace(password, "***") if password else text


def is_lost(exc: BaseException) -> bool:
    """True when ``exc`` means the connection or the server went away (worth retrying)."""
    asyncpg = driver()
    if isinstance(exc, OSError | asyncio.TimeoutError):
        return True
    if isinstance(
        exc,
        asyncpg.PostgresConnectionError
        | asyncpg.exceptions.OperatorInterventionError
        | asyncpg.exceptions.TooManyConnectionsError
        | asyncpg.exceptions.TransactionRollbackError,  # deadlock, serialization: try again
    ):
        return True
    if isinstance(exc, asyncpg.exceptions.InternalClientError):
        # asyncpg's state after the server cut a connection it still thought usable: the pool
        # drops that connection on release, and the retry gets a new one.
        return True
    # A closed connection, or a pooled one the pool took back when its server connection closed.
    return isinstance(exc, asyncpg.InterfaceError) and any(
        text in str(exc) for text in ("closed", "released back to the pool")
    )


READ_SIZE = 64 * 1024
"""Bytes asyncio reads from a connection's socket at a time. Its default, 256 KiB, is a new
buffer for every read, and allocating one that large (memory mapped, then unmapped) costs
more than the read itself, a fifth of a round trip's CPU on a virtual machine; flux's replies
are small, and a larger one arrives over several reads."""


def small_reads(conn: Any) -> None:
    """Make asyncio read ``conn``'s socket :data:`READ_SIZE` bytes at a time. Only for the
    event loop's own socket transport (asyncpg keeps it as ``_transport``); any other, uvloop's
    say, is left as it is."""
    transport = getattr(conn, "_transport", None)
    if isinstance(getattr(transport, "max_size", None), int):
        transport.max_size = READ_SIZE  # type: ignore[union-attr]


async def _new_connection(conn: Any) -> None:
    """The pool's set-up of each new connection."""
    small_reads(conn)


async def _keep_session(conn: Any) -> None:
    """The pool's reset on release: usually nothing to send. flux leaves no session state
    behind (its locks are transaction-scoped, its LISTEN has a connection of its own), and
    asyncpg's default reset costs a round trip per call. Only a transaction left open (a call
    cut short) is rolled back."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


async def open_pool(dsn: str | None, min_size: int, max_size: int, name: str) -> Any:
    """A connected asyncpg pool (its connections named ``name``), or a StorageError naming
    host and database.

    Raises:
        StorageError: a malformed DSN, an unreachable server, a missing database or wrong
            credentials (the message names host and database, never the password).
    """
    asyncpg = driver()
    where, password = describe(dsn)
    try:
        return await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            timeout=10,
            server_settings={"application_name": name[:63]},  # pg_stat_activity shows it
            reset=_keep_session,
            init=_new_connection,
        )
    except asyncpg.InvalidCatalogNameError as exc:
        hint = "create it (createdb, or CREATE DATABASE) or fix the database name in the DSN"
        raise StorageError(f"{where} does not exist ({_redact(str(exc), password)}): {hint}") from None
    except (asyncpg.InvalidAuthorizationSpecificationError, asyncpg.InvalidPasswordError) as exc:
        raise StorageError(
            f"{where} refused the credentials ({_redact(str(exc), password)}): check the user and "
            "password in the DSN (or PGPASSWORD / .pgpass) and pg_hba.conf"
        ) from None
    except (TimeoutError, OSError) as exc:
        raise StorageError(
            f"cannot reach {where} ({_redact(str(exc), password)}): check that the server runs and "
            "that host and port in the DSN are right"
        ) from None
    except (asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
        raise StorageError(
            f"cannot open {where} ({_redact(str(exc), password)}); the DSN looks like "
            "postgresql://user:password@host:5432/database"
        ) from None


async def connect(dsn: str | None, name: str) -> Any:
    """One connection outside any pool, named ``name`` like the pool's."""
    conn = await driver().connect(dsn, timeout=10, server_settings={"application_name": name[:63]})
    small_reads(conn)
    return conn


async def retrying(where: str, call: Callable[[], Awaitable[T]]) -> T:
    """``await call()``, retried with backoff for up to :data:`RECONNECT_FOR` seconds from the
    first failure while the connection is lost; other database errors become
    :class:`StorageError`. (The call that goes through at once, nearly every one, pays for
    nothing else.)"""
    deadline: float | None = None
    pause = 0.05
    while True:
        try:
            return await call()
        except UnicodeEncodeError as exc:  # a lone surrogate got past the JSON check
            raise StorageError(
                f"a value holds a str PostgreSQL cannot store ({exc}); flux stores valid Unicode text only"
            ) from None
        except Exception as exc:
            asyncpg = driver()
            internal = asyncpg.exceptions.InternalClientError
            failures = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, internal)
            if not isinstance(exc, failures):  # (TimeoutError is an OSError)
                raise
            if not is_lost(exc):
                raise StorageError(f"{where} failed: {exc}") from exc
            now = asyncio.get_running_loop().time()
            deadline = now + RECONNECT_FOR if deadline is None else deadline
            if now >= deadline:
                raise StorageError(
                    f"lost the connection to {where} and could not get it back within "
                    f"{RECONNECT_FOR:g}s ({exc}); check the server"
                ) from exc
            logger.warning("connection to %s lost (%s); retrying in %.2fs", where, exc, pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 2.0)
