"""SQLiteStorage: runs in one SQLite file (aiosqlite), shared safely by several processes.

The file runs in WAL mode with ``synchronous=NORMAL``: a commit survives a crash of the
process; a power cut may lose the last few commits but never corrupts the file. Writes take the
write lock up front (``BEGIN IMMEDIATE``) and wait up to ``busy_timeout`` for another process.

Checkpoints use group commit: checkpoints that arrive while a write is in flight are queued and
written together in the next transaction, so many runs in flight share one commit. Each caller
still returns only once its own checkpoint is committed. They are written on the event loop's
thread when they can be (see ``_write_checkpoints``), everything else on aiosqlite's thread.
"""

from __future__ import annotations

import asyncio
import builtins
import os
import sqlite3
import stat
import urllib.parse
import warnings
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

import aiosqlite

from flux._duration import to_seconds
from flux.errors import StorageError
from flux.records import JSON, RunFilter, RunRecord, SignalRecord, StepRecord
from flux.status import RunStatus
from flux.storage._common import FINISHED, finished_statuses, only_times_moved, remember
from flux.storage._group_commit import GroupCommit, Outcome
from flux.storage._sqlite_connect import connect
from flux.storage._sqlite_errors import check_versions, translate
from flux.storage._sqlite_ops import Checkpoint, SQLiteOps, is_busy, step_writes
from flux.storage._sqlite_rows import Row, encode_input, encode_json, encode_run, encode_tick, micros
from flux.storage._sqlite_schema import Statements
from flux.storage._sqlite_wal import SAFETY_NET_PAGES, WalCheckpointer

T = TypeVar("T")
_RUNNING = RunStatus.RUNNING


class SQLiteStorage:
    """Runs kept in a SQLite database file: the embedded, durable backend.

    Args:
        path: the database file (created if missing), ``":memory:"`` (the default) for a
            private in-memory database, or a ``file:`` URI (``"file:flux.db?mode=ro"`` opens
            it read-only). A file without any write permission bit is opened read-only too
            (even by root): its runs can be read, writes raise :class:`StorageError`.
        table_prefix: prefix of every table name (letters, digits, underscore), so that
            several stores can share one file.
        busy_timeout: seconds a write waits for another process's write lock.

    The connection opens on ``init()`` (or the first call). Several processes may use one file.

    >>> storage = SQLiteStorage(":memory:", table_prefix="demo_")
    >>> storage.table_prefix
    'demo_'

    Raises (from ``init`` or any call that opens the database):
        StorageCorruptedError: the file is not a SQLite database, or a row cannot be read.
        SchemaVersionError: the database was written by a newer flux.
        StorageError: the file cannot be opened, is read-only, or stays locked.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] = ":memory:",
        *,
        table_prefix: str = "flux_",
        busy_timeout: float = 30.0,
    ):
        self.busy_timeout = to_seconds(busy_timeout, "busy_timeout")
        self.path = os.fspath(path)
        self.table_prefix = table_prefix
        self._ops = SQLiteOps(Statements(table_prefix), self.busy_timeout, self.path)
        self._db: aiosqlite.Connection | None = None
        self._direct: sqlite3.Connection | None = None
        """A second connection, used on the event loop's own thread (see ``_write_checkpoints``)."""
        self._hops = 0  # calls on their way to, or running on, aiosqlite's thread
        self._opening = asyncio.Lock()
        self._commits: GroupCommit[Checkpoint] = GroupCommit(self._write_checkpoints)
        self._wal = WalCheckpointer()
        # Per unfinished run, the record and the row of its last checkpoint: a checkpoint whose
        # fields are the same objects encodes and writes only what changed.
        self._known: dict[str, tuple[RunRecord, Row]] = {}
        self.read_only = False
        """True once opened read-only (a ``mode=ro`` URI or a file without write permission)."""

    def __repr__(self) -> str:
        return f"SQLiteStorage({self.path!r}, table_prefix={self.table_prefix!r})"

    def __del__(self) -> None:
        if getattr(self, "_db", None) is not None:
            warnings.warn(
                f"{self!r} was never closed. Use `async with FluxEngine(storage=...) as engine:` "
                "(or `async with storage:`), or call `await engine.close()`",
                ResourceWarning,
                stacklevel=1,
                source=self,
            )

    async def __aenter__(self) -> SQLiteStorage:
        await self.init()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # --- connection -----------------------------------------------------------------------

    def _target(self) -> tuple[str, bool, bool]:
        """(database, uri, read_only) to hand to sqlite3.connect."""
        path = self.path
        if path.startswith("file:"):
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
            return path, True, query.get("mode") == ["ro"]
        if path in ("", ":memory:"):
            return ":memory:", False, False
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            # Checked here: after a failed connect, aiosqlite's thread finishes on its own time.
            raise StorageError(
                f"cannot open SQLite database {path!r}: its directory {folder!r} does not exist; "
                "create it first"
            )
        try:
            mode = os.stat(path).st_mode
        except OSError:
            return path, False, False
        if stat.S_IMODE(mode) & 0o222 == 0:
            # No write bit: open read-only on purpose, so root (whom permissions do not stop)
            # leaves the file alone as well.
            return f"file:{urllib.parse.quote(os.path.abspath(path))}?mode=ro", True, True
        return path, False, False

    async def init(self) -> None:
        """Open the database, set its pragmas and migrate its schema. Safe to call twice."""
        if self._db is None:
            async with self._opening:
                if self._db is None:
                    await self._open()

    async def _open(self) -> None:
        check_versions()
        database, uri, read_only = self._target()
        try:
            db = await connect(database, uri=uri, timeout=self.busy_timeout)
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        try:
            await self._run(db, self._ops.setup, read_only)
            if not read_only and database != ":memory:":
                await self._wal.open(database, uri, self.busy_timeout)
                if not (uri and "mode=memory" in database):  # a second memory connection: another database
                    self._direct = _open_direct(database, uri)
        except BaseException:
            await db.close()
            raise
        self._db, self.read_only = db, read_only

    async def close(self) -> None:
        """Wait for queued checkpoints, then close the connection. Safe to call twice."""
        await self._commits.wait_idle()
        await self._wal.close()
        direct, self._direct = self._direct, None
        if direct is not None:
            self._ops.forget_connection(direct)
            direct.close()
        db, self._db = self._db, None
        if db is not None:
            await db.close()

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._db is None:
            await self.init()
        assert self._db is not None
        return await self._run(self._db, fn, *args)

    async def _run(self, db: aiosqlite.Connection, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(sqlite3_connection, *args)`` on aiosqlite's worker thread: one thread hop.

        aiosqlite has no public API for this: each of its public calls (execute, fetch, commit)
        is a separate hop to its thread (~75 µs each), so a transaction made of them would cost
        several hops. ``_execute`` queues one function for that thread and ``_conn`` is the
        sqlite3 connection it owns (aiosqlite is pinned below 0.23 for these two names).
        """
        self._hops += 1
        try:
            result: T = await db._execute(fn, db._conn, *args)  # type: ignore[no-untyped-call]
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        except ValueError as exc:
            if "closed" not in str(exc) and "no active connection" not in str(exc):
                raise
            raise StorageError(f"{self!r} was closed while a call was in flight") from exc
        finally:
            self._hops -= 1
        return result

    def _error(self, exc: sqlite3.Error) -> StorageError:
        return translate(exc, self.path, self.busy_timeout)

    # --- runs -----------------------------------------------------------------------------

    async def save(self, run: RunRecord) -> None:
        """Insert or replace ``run`` and all its step records; ``created_at`` is kept on update."""
        steps = step_writes(self._ops.sql, run.id, run.steps)
        self._known.pop(run.id, None)
        await self._call(self._ops.save, encode_run(run, encode_input(run)), steps)

    async def create(
        self, run: RunRecord, *, key: str | None = None, key_expires_at: datetime | None = None
    ) -> str | None:
        """Insert a new run with its step records, never over a stored one; with ``key``, bind
        that idempotency key to it in the same transaction, unless the key is bound to a
        stored, unexpired run: then store nothing and return that run's id.

        Raises:
            InvalidRunStateError: the run's id is taken (nothing is written).
        """
        steps = step_writes(self._ops.sql, run.id, run.steps)
        binding = None
        if key is not None:
            if key_expires_at is None:
                raise ValueError("create(key=...) needs key_expires_at")
            binding = (run.workflow, key, micros(key_expires_at, "key_expires_at"))
        self._known.pop(run.id, None)
        return await self._call(self._ops.create, encode_run(run, encode_input(run)), steps, binding)

    async def load(self, run_id: str) -> RunRecord | None:
        """The stored run with its step records in ``seq`` order, or None.

        Raises:
            StorageCorruptedError: a column of the run cannot be read (other runs still load).
        """
        return await self._call(self._ops.load, run_id)

    async def list(self, filter: RunFilter | None = None) -> builtins.list[RunRecord]:
        """Runs matching ``filter``, newest first (ties: the later stored first), with steps."""
        filter = filter or RunFilter()
        statuses = sorted(s.value for s in filter.status) if filter.status is not None else []
        if filter.status is not None and not statuses:
            return []
        limit = -1 if filter.limit is None else filter.limit
        labels = sorted((filter.labels or {}).items())
        return await self._call(self._ops.list_runs, filter.workflow, statuses, labels, limit, filter.offset)

    async def delete(self, run_id: str) -> bool:
        """Remove a run, its step records and signals; False when there was none."""
        self._known.pop(run_id, None)
        return await self._call(self._ops.delete, run_id)

    async def checkpoint(self, run: RunRecord, steps: Sequence[StepRecord] = ()) -> None:
        """Write ``run``'s own fields and upsert ``steps``, atomically, in one transaction.

        Checkpoints arriving while another is being written share the next transaction.

        Raises:
            LeaseLostError: ``run.owner`` is set and the stored run has another owner (nothing
                of this checkpoint is written; other checkpoints of the batch are).
            StorageError: a value is not JSON, or the database failed.
        """
        await self._commits.submit(self._encode(run, steps))

    async def _write_checkpoints(self, items: Sequence[Checkpoint]) -> builtins.list[Outcome]:
        """Write a batch of checkpoints in one transaction; one outcome each.

        While nothing is on its way to aiosqlite's thread, the batch is written on the event
        loop's own thread, through a second connection that never waits for a lock: in WAL mode
        with ``synchronous=NORMAL`` a commit appends to the WAL file without an fsync (the WAL
        is copied back off the write path, see ``_sqlite_wal.py``), which costs less than the
        hop to the thread and back. Should another connection hold the write lock ("busy"),
        the batch goes through the thread as before, where waiting is fine.
        """
        db, direct = self._db, self._direct
        outcomes: builtins.list[Outcome] | None = None
        try:
            if direct is not None and not self._hops:
                if len(items) == 1:
                    # Group commit: checkpoints of other runs that are ready now queue behind
                    # this one (and go together next) instead of each committing alone.
                    await asyncio.sleep(0)
                if not self._hops:
                    outcomes = self._write_direct(direct, items)
            if outcomes is None:  # not tried, or busy: through aiosqlite's thread
                outcomes = await self._through_thread(db, items)
        except Exception as exc:
            error = self._outcome_error(exc)
            if error is exc:
                raise
            raise error from exc
        self._wal.written(len(items))
        if any(outcomes):
            return [None if outcome is None else self._outcome_error(outcome) for outcome in outcomes]
        return outcomes

    async def _through_thread(
        self, db: aiosqlite.Connection | None, items: Sequence[Checkpoint]
    ) -> builtins.list[Outcome]:
        if db is None:
            return await self._call(self._ops.write_checkpoints, items)
        return await self._run(db, self._ops.write_checkpoints, items)

    def _write_direct(
        self, direct: sqlite3.Connection, items: Sequence[Checkpoint]
    ) -> builtins.list[Outcome] | None:
        """``write_checkpoints`` on the loop's thread; None when the database is busy."""
        try:
            return self._ops.write_checkpoints(direct, items, wait=False)
        except sqlite3.OperationalError as exc:
            if is_busy(exc):
                return None
            raise self._error(exc) from exc
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    def _encode(self, run: RunRecord, steps: Sequence[StepRecord]) -> Checkpoint:
        """A checkpoint of ``run`` and ``steps``, each value encoded once: the fields that are
        the objects of the run's last checkpoint are not encoded again, and while it runs with
        only its times changed, only those are written (a tick: see ``write_checkpoints``)."""
        known = self._known.get(run.id)
        if known is None:
            row, same_input = encode_run(run, encode_input(run)), False
        else:
            last, row = known
            same_input = run.input is last.input
            running = run.status is _RUNNING and run.owner is not None
            if same_input and running and only_times_moved(run, last):
                tick = encode_tick(run)
                if tick is not None:
                    return row, tick, step_writes(self._ops.sql, run.id, steps), True
            row = encode_run(run, row[4] if same_input else encode_input(run))
        writes = step_writes(self._ops.sql, run.id, steps)
        if run.steps or run.status in FINISHED:  # (a run with steps is no engine's header)
            self._known.pop(run.id, None)
        else:
            remember(self._known, run.id, (run, row))
        return row, None, writes, same_input

    def _outcome_error(self, outcome: BaseException) -> BaseException:
        if isinstance(outcome, UnicodeEncodeError):  # a lone surrogate got past the JSON check
            return StorageError(
                f"a checkpoint holds a str SQLite cannot store ({outcome}); "
                "flux stores valid Unicode text only"
            )
        return self._error(outcome) if isinstance(outcome, sqlite3.Error) else outcome

    async def prune(self, *, older_than: datetime, status: Sequence[RunStatus | str] | None = None) -> int:
        """Delete finished runs (of ``status``, default every finished one) that finished before
        ``older_than``; returns how many. Raises ``ValueError`` for an unfinished status."""
        statuses = sorted(s.value for s in finished_statuses(status))
        return await self._call(self._ops.prune, statuses, micros(older_than, "older_than"))

    # --- leases ---------------------------------------------------------------------------

    async def claim(
        self,
        run_id: str,
        owner: str,
        lease_expires_at: datetime,
        *,
        now: datetime,
        takeover: str | None = None,
    ) -> RunRecord | None:
        """Take a run if it is free, already ``owner``'s, its lease expired before ``now``, or
        held by ``takeover``; returns it with its step records, or None. Atomic."""
        lease, at = micros(lease_expires_at, "lease_expires_at"), micros(now, "now")
        return await self._call(self._ops.claim, run_id, owner, lease, at, takeover)

    async def renew(self, owner: str, lease_expires_at: datetime, run_ids: Sequence[str]) -> int:
        """Extend the lease of each of ``run_ids`` that ``owner`` holds (with a lease); how many."""
        lease = micros(lease_expires_at, "lease_expires_at")
        return await self._call(self._ops.renew, owner, lease, sorted(set(run_ids)))

    async def release(self, run_id: str, owner: str) -> None:
        """Drop ``owner``'s claim on ``run_id`` (no-op if not the owner)."""
        await self._call(self._ops.release, run_id, owner)

    # --- waiting and workers --------------------------------------------------------------

    async def add_signal(
        self, run_id: str, name: str, payload: JSON, at: datetime, *, limit: int | None = None
    ) -> SignalRecord | None:
        """Store a signal for an unfinished run and make a suspended run due at ``at``; with
        ``limit``, refuse (``UnknownSignalError``) when that many untaken ones are stored."""
        text = encode_json(payload, f"the payload of signal {name!r}")
        return await self._call(self._ops.add_signal, run_id, name, text, micros(at, "at"), limit)

    async def take_signal(self, run_id: str, name: str, seq: int) -> SignalRecord | None:
        """The signal visit ``seq`` took already, else the oldest untaken one, now taken."""
        return await self._call(self._ops.take_signal, run_id, name, seq)

    async def list_signals(self, run_id: str) -> builtins.list[SignalRecord]:
        """Every signal stored for a run, oldest first."""
        return await self._call(self._ops.list_signals, run_id)

    async def due(self, now: datetime, limit: int) -> builtins.list[RunRecord]:
        """Pending and suspended runs with ``wake_at <= now``, earliest first, without steps."""
        return await self._call(self._ops.headers, "due", (micros(now, "now"), limit))

    async def next_wake(self) -> datetime | None:
        """The earliest ``wake_at`` of a pending or suspended run."""
        return await self._call(self._ops.next_wake)

    async def orphans(self, now: datetime, host: str, limit: int) -> builtins.list[RunRecord]:
        """Running or rolling-back runs without a live lease, or owned on ``host``; no steps."""
        prefix = host + "/"
        return await self._call(self._ops.headers, "orphans", (micros(now, "now"), prefix, prefix, limit))

    async def request_cancel(self, run_id: str, request: Mapping[str, JSON]) -> bool:
        """Record a cancellation request on an unfinished run; False if finished or unknown."""
        text = encode_json(dict(request), f"the cancellation request of run {run_id}")
        return await self._call(self._ops.request_cancel, run_id, text)

    async def cancel_requests(self, owner: str) -> builtins.list[RunRecord]:
        """Unfinished runs held by ``owner`` with a cancellation requested; no steps."""
        return await self._call(self._ops.headers, "cancel_requests", (owner,))


def _open_direct(database: str, uri: bool) -> sqlite3.Connection:
    """The connection for checkpoints written on the event loop's thread: autocommit, a busy
    database answered at once (``timeout=0``: the loop never waits for a lock), and the
    writer's pragmas (``synchronous=NORMAL``, the WAL autocheckpoint safety net)."""
    conn = sqlite3.connect(database, uri=uri, isolation_level=None, timeout=0)
    try:
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(f"PRAGMA wal_autocheckpoint = {SAFETY_NET_PAGES}")
    except BaseException:
        conn.close()
        raise
    return conn
