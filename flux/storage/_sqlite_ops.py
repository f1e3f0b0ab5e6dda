"""SQLiteStorage's operations as plain functions of a ``sqlite3.Connection``.

Each public method is a whole transaction and runs in one go on aiosqlite's worker thread (see
``SQLiteStorage._call``), so every storage call costs one thread hop; checkpoints may also run
on the event loop's thread, on a connection that does not wait (``wait=False``: a busy
database raises at once, and the caller takes the thread). Writes start with
``BEGIN IMMEDIATE`` (the write lock up front: no deadlock between two writers upgrading read
locks); a busy database is waited for by SQLite's busy timeout, and the few "busy" answers
SQLite gives without waiting (while another process opens or recovers the WAL) are retried here
until the same timeout.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from flux.errors import (
    InvalidRunStateError,
    LeaseLostError,
    SchemaVersionError,
    StorageCorruptedError,
    StorageError,
    UnknownSignalError,
)
from flux.records import RunRecord, SignalRecord, StepRecord
from flux.status import RunStatus
from flux.storage._common import duplicate_signal
from flux.storage._sqlite_rows import (
    FINISHED_VALUES,
    Row,
    WrittenRows,
    decode_run,
    decode_signal,
    from_micros,
    step_params,
)
from flux.storage._sqlite_schema import LATEST_VERSION, MIGRATIONS, Statements
from flux.storage._sqlite_wal import SAFETY_NET_PAGES

T = TypeVar("T")
StepWrites = tuple[tuple[str, tuple[Any, ...]], ...]
"""Step upserts, as (statement, parameters); see ``step_writes``."""
Checkpoint = tuple[Row, tuple[int | None, int | None] | None, StepWrites, bool]
"""One checkpoint: the run's row; its tick, ``(updated_at, lease_expires_at)`` in microseconds,
when those are the only fields that changed since ``row`` (then ``row`` is the row this process
wrote last for the run, those two columns aside); its step upserts; and whether its input is
the one this process wrote last (then an existing row keeps its input column)."""

_BUSY = (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED
_CHUNK = 500  # run ids per IN (...) list: well under SQLite's parameter limit
_ROWS_PER_UPSERT = 8  # step records per upsert statement (up to 16 parameters each)
logger = logging.getLogger("flux.storage.sqlite")


def step_writes(sql: Statements, run_id: str, steps: Sequence[StepRecord]) -> StepWrites:
    """The upserts of a run's step records: a few rows per statement (each statement has a
    cost of its own), every value encoded here, once.

    Raises:
        StorageError: a value of a record cannot be stored.
    """
    if len(steps) > _ROWS_PER_UPSERT:
        chunks = range(0, len(steps), _ROWS_PER_UPSERT)
        return sum([step_writes(sql, run_id, steps[i : i + _ROWS_PER_UPSERT]) for i in chunks], ())
    if not steps:
        return ()
    shapes = []
    values: tuple[Any, ...] = ()
    for step in steps:
        shape, row = step_params(run_id, step)
        shapes.append(shape)
        values += row
    return ((sql.upsert_steps(tuple(shapes)), values),)


def is_busy(exc: sqlite3.Error) -> bool:
    """True for "database is locked / busy" errors, which are worth waiting out."""
    return getattr(exc, "sqlite_errorcode", 0) & 0xFF in _BUSY


class SQLiteOps:
    """The transactions of one database and table prefix (used from one thread at a time)."""

    def __init__(self, sql: Statements, busy_timeout: float, path: str) -> None:
        self.sql = sql
        self.busy_timeout = busy_timeout
        self.path = path
        self._written = WrittenRows()
        """The row of each unfinished run as this connection last committed it (for a tick:
        see ``write_checkpoints``); dropped by any other write to the run through it."""
        self._cursors: dict[sqlite3.Connection, sqlite3.Cursor] = {}
        self._tick_sql = sql["run_tick"]

    # --- transactions ---------------------------------------------------------------------

    def _transaction(
        self, conn: sqlite3.Connection, write: bool, body: Callable[..., T], *args: Any, wait: bool = True
    ) -> T:
        """Run ``body(conn, *args)`` in one transaction, retrying while the database is busy
        (with ``wait`` false: raising at the first "busy", on a connection that does not wait).

        SQLite's busy handler already waits for a lock; the retries cover the "busy" answers
        given without waiting, within the same overall ``busy_timeout``.
        """
        deadline = None
        pause = 0.001
        cursor = self.cursor(conn)
        while True:
            try:
                cursor.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    result = body(conn, *args)
                    cursor.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                return result
            except sqlite3.OperationalError as exc:
                if not wait or not is_busy(exc):
                    raise
                now = time.monotonic()
                if deadline is None:  # the wait began with the first try, a moment ago
                    deadline = now + self.busy_timeout
                if now >= deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 0.05)

    def cursor(self, conn: sqlite3.Connection) -> sqlite3.Cursor:
        """A cursor of ``conn`` kept for the writes (``conn.execute`` makes a new one each time)."""
        cursor = self._cursors.get(conn)
        if cursor is None:
            cursor = self._cursors[conn] = conn.cursor()
        return cursor

    def forget_connection(self, conn: sqlite3.Connection) -> None:
        """Drop the kept cursor of a connection about to close."""
        self._cursors.pop(conn, None)

    # --- schema ---------------------------------------------------------------------------

    def setup(self, conn: sqlite3.Connection, read_only: bool) -> int:
        """Set the pragmas and bring the schema to the latest version; returns that version.

        Raises:
            SchemaVersionError: the database was written by a newer flux.
            StorageError: a read-only database needs migrating.
        """
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        if not read_only:
            # Switching to WAL needs a moment of exclusive access; another process opening the
            # same file at the same time gets "busy" without SQLite's busy handler: retry.
            self._while_busy(lambda: conn.execute("PRAGMA journal_mode = WAL").fetchone())
        conn.execute("PRAGMA synchronous = NORMAL")
        if not read_only:  # a WalCheckpointer does this job first, off the write path
            conn.execute(f"PRAGMA wal_autocheckpoint = {SAFETY_NET_PAGES}")
        version = self._transaction(conn, False, self._version)
        if version == LATEST_VERSION:
            return version
        self._check_not_newer(version)
        if read_only:
            raise StorageError(
                f"SQLite database {self.path!r} has flux schema version {version} and needs "
                f"migrating to {LATEST_VERSION}, but it is open read-only; open it once with write "
                "access to migrate it"
            )
        return self._transaction(conn, True, self._migrate)

    def _while_busy(self, fn: Callable[[], T]) -> T:
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if not is_busy(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.01)

    def _version(self, conn: sqlite3.Connection) -> int:
        if conn.execute(self.sql["has_version_table"]).fetchone() is None:
            return 0
        return int(conn.execute(self.sql["current_version"]).fetchone()[0])

    def _check_not_newer(self, version: int) -> None:
        if version > LATEST_VERSION:
            raise SchemaVersionError(
                f"SQLite database {self.path!r} has flux schema version {version}, but this flux "
                f"knows versions up to {LATEST_VERSION}: it was written by a newer flux. Upgrade "
                "flux (pip install -U flux-workflow) or use another database file."
            )

    def _migrate(self, conn: sqlite3.Connection) -> int:
        version = self._version(conn)  # again, now under the write lock
        self._check_not_newer(version)
        conn.execute(self.sql["create_version_table"])
        applied_at = datetime.now(UTC).isoformat()
        for migration in MIGRATIONS:
            if migration.version > version:
                for statement in self.sql.migration(migration):
                    conn.execute(statement)
                params = (migration.version, migration.description, applied_at)
                conn.execute(self.sql["record_version"], params)
        return LATEST_VERSION

    # --- runs -----------------------------------------------------------------------------

    def write_checkpoints(
        self, conn: sqlite3.Connection, batch: Sequence[Checkpoint], wait: bool = True
    ) -> list[BaseException | None]:
        """Write a batch of checkpoints in one transaction; one outcome per checkpoint.

        A checkpoint fenced off by another owner gets a :class:`LeaseLostError` and writes
        nothing; the others commit. Should the batch fail as a whole for any other reason (a
        value SQLite cannot bind raises ``UnicodeEncodeError``, not a ``sqlite3.Error``), each
        checkpoint is retried in its own transaction so that only the bad one fails.

        A tick (only ``updated_at`` and the lease changed, on a running run) is one small
        UPDATE, fenced by the owner, provided that the row it was computed from is the one this
        connection last committed for the run; otherwise the whole row is written.
        """
        try:
            outcomes, written = self._transaction(conn, True, self._write_batch, batch, wait=wait)
        except Exception as exc:
            if len(batch) == 1 or (isinstance(exc, sqlite3.Error) and is_busy(exc)):
                self._written.forget(item[0][0] for item in batch)
                raise
        else:
            if written:
                self._remember(written)
            return outcomes
        self._written.forget(item[0][0] for item in batch)
        outcomes = []
        for item in batch:
            try:
                (outcome,), written = self._transaction(conn, True, self._write_batch, [item], wait=wait)
            except Exception as exc:
                if not wait and isinstance(exc, sqlite3.Error) and is_busy(exc):
                    raise  # the caller writes the batch again where it may wait (upserts: idempotent)
                outcomes.append(exc)
            else:
                outcomes.append(outcome)
                self._remember(written)
        return outcomes

    def _remember(self, written: dict[str, Row | None]) -> None:
        for run_id, row in written.items():
            self._written.note(run_id, row)

    def _write_batch(
        self, conn: sqlite3.Connection, batch: Sequence[Checkpoint]
    ) -> tuple[list[BaseException | None], dict[str, Row | None]]:
        cursor = self.cursor(conn)
        known = self._written
        tick_sql = self._tick_sql
        outcomes: list[BaseException | None] = []
        written: dict[str, Row | None] = {}  # this transaction's rows (None: unknown)
        for run, tick, steps, same_input in batch:
            run_id = run[0]
            last = written[run_id] if run_id in written else known.get(run_id)
            if tick is not None:
                if last is run and cursor.execute(tick_sql, (*tick, run_id, run[9])).rowcount:
                    for statement in steps:
                        cursor.execute(*statement)
                    outcomes.append(None)
                    continue
                run = (*run[:6], tick[0], *run[7:10], tick[1], *run[11:])
            lost = self._write_run(cursor, run, same_input, last)
            written[run_id] = None if lost else run
            if lost is None:
                for statement in steps:
                    cursor.execute(*statement)
            outcomes.append(lost)
        return outcomes, written

    def _write_run(
        self, cursor: sqlite3.Cursor, run: Row, same_input: bool, last: Row | None
    ) -> LeaseLostError | None:
        """Write a run's whole row, given the row this connection last committed for it (None:
        unknown; then the run may be new: it is inserted first). The LeaseLostError if the run
        is fenced off."""
        sql = self.sql
        bind = sql.bind
        run_id, owner = run[0], run[9]
        if last is None and cursor.execute(*bind(sql["run_insert_new"], run)).rowcount:
            return None
        # Row positions: see RUN_COLUMNS. First the steady UPDATE (no indexed column changes;
        # not tried when the last row says one does), else the full one (fenced by the
        # owner), else it is a new run or fenced.
        where = (run_id, owner, run[1], run[3], run[11])
        if last is None or (last[1], last[3], last[11]) == where[2:]:
            if same_input:
                steady = bind(sql["run_steady_keep_input"], (run[2], *run[6:9], run[10], run[12], *where))
            else:
                steady = bind(sql["run_steady"], (run[2], run[4], *run[6:9], run[10], run[12], *where))
            if cursor.execute(*steady).rowcount:
                return None
        full = bind(sql["run_checkpoint"], (*run[1:5], *run[6:13], run_id, owner, owner))
        if cursor.execute(*full).rowcount:
            return None
        found = cursor.execute(sql["run_owner"], (run_id,)).fetchone()
        if found is not None:
            return LeaseLostError(f"run {run_id} is now owned by {found[0]}, not {owner}", run_id=run_id)
        cursor.execute(*bind(sql["run_insert"], run))
        return None

    def create(
        self, conn: sqlite3.Connection, run: Row, steps: StepWrites, key: tuple[str, str, int] | None
    ) -> str | None:
        """Insert a new run (and bind ``key``: workflow, key, expiry) unless the key is bound."""
        self._written.pop(run[0], None)
        bound = self._transaction(conn, True, self._create, run, steps, key)
        if bound is None:
            self._remember({run[0]: run})
        return bound

    def _create(
        self, conn: sqlite3.Connection, run: Row, steps: StepWrites, key: tuple[str, str, int] | None
    ) -> str | None:
        run_id, created_at = run[0], run[5]
        if key is not None:
            bound = conn.execute(self.sql["key_bound"], (key[0], key[1], created_at)).fetchone()
            if bound is not None:
                return str(bound[0])
        if conn.execute(self.sql["run_owner"], (run_id,)).fetchone() is not None:
            raise InvalidRunStateError(f"run id {run_id!r} is already stored", run_id=run_id)
        cursor = conn.cursor()
        cursor.execute(*self.sql.bind(self.sql["run_insert"], run))
        for statement in steps:
            cursor.execute(*statement)
        if key is not None:
            conn.execute(self.sql["key_bind"], (key[0], key[1], run_id, key[2]))
        return None

    def save(self, conn: sqlite3.Connection, run: Row, steps: StepWrites) -> None:
        """Upsert a run (keeping its created_at) and replace its step records."""
        self._written.pop(run[0], None)
        self._transaction(conn, True, self._save, run, steps)
        self._remember({run[0]: run})

    def _save(self, conn: sqlite3.Connection, run: Row, steps: StepWrites) -> None:
        cursor = conn.cursor()
        cursor.execute(*self.sql.bind(self.sql["run_upsert"], run))
        cursor.execute(self.sql["steps_delete"], (run[0],))
        for statement in steps:
            cursor.execute(*statement)

    def load(self, conn: sqlite3.Connection, run_id: str) -> RunRecord | None:
        """The run with its step records, or None."""
        return self._transaction(conn, False, self._load, run_id)

    def _load(self, conn: sqlite3.Connection, run_id: str) -> RunRecord | None:
        row = conn.execute(self.sql["run_select"], (run_id,)).fetchone()
        if row is None:
            return None
        return decode_run(row, conn.execute(self.sql["steps_select"], (run_id,)).fetchall())

    def list_runs(
        self,
        conn: sqlite3.Connection,
        workflow: str | None,
        statuses: Sequence[str],
        labels: Sequence[tuple[str, str]],
        limit: int,
        offset: int,
    ) -> list[RunRecord]:
        """Runs newest first (``limit`` -1: no limit), with their step records."""
        return self._transaction(conn, False, self._list, workflow, statuses, labels, limit, offset)

    def _list(
        self,
        conn: sqlite3.Connection,
        workflow: str | None,
        statuses: Sequence[str],
        labels: Sequence[tuple[str, str]],
        limit: int,
        offset: int,
    ) -> list[RunRecord]:
        query = self.sql.list_runs(workflow is not None, len(statuses), len(labels))
        pairs = [value for pair in labels for value in pair]
        params = ([] if workflow is None else [workflow]) + [*statuses, *pairs, limit, offset]
        rows = conn.execute(query, params).fetchall()
        steps: dict[str, list[Row]] = {row[0]: [] for row in rows}
        ids = list(steps)
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            for step in conn.execute(self.sql.with_marks("steps_select_many", len(chunk)), chunk):
                steps[step[0]].append(step)
        return _readable(rows, lambda row: decode_run(row, steps[row[0]]))

    def delete(self, conn: sqlite3.Connection, run_id: str) -> bool:
        """Remove a run, its step records and its signals."""
        self._written.pop(run_id, None)
        return self._transaction(conn, True, self._delete, run_id)

    def _delete(self, conn: sqlite3.Connection, run_id: str) -> bool:
        conn.execute(self.sql["steps_delete"], (run_id,))
        conn.execute(self.sql["signals_delete"], (run_id,))
        conn.execute(self.sql["keys_delete"], (run_id,))
        return conn.execute(self.sql["run_delete"], (run_id,)).rowcount > 0

    def prune(self, conn: sqlite3.Connection, statuses: Sequence[str], older_than: int) -> int:
        """Delete finished runs of ``statuses`` finished before ``older_than``; how many."""
        return self._transaction(conn, True, self._prune, statuses, older_than)

    def _prune(self, conn: sqlite3.Connection, statuses: Sequence[str], older_than: int) -> int:
        where, params = self.sql["prune_where"], [*statuses, older_than]
        for name in ("prune_steps", "prune_signals", "prune_keys"):
            conn.execute(self.sql.with_marks(name, len(statuses), where=where), params)
        return conn.execute(self.sql.with_marks("prune_runs", len(statuses), where=where), params).rowcount

    # --- leases ---------------------------------------------------------------------------

    def claim(
        self, conn: sqlite3.Connection, run_id: str, owner: str, lease: int, now: int, takeover: str | None
    ) -> RunRecord | None:
        """Compare-and-set the run's owner; the claimed run, or None."""
        self._written.pop(run_id, None)  # another owner may have written it meanwhile
        return self._transaction(conn, True, self._claim, run_id, owner, lease, now, takeover)

    def _claim(
        self, conn: sqlite3.Connection, run_id: str, owner: str, lease: int, now: int, takeover: str | None
    ) -> RunRecord | None:
        params = (owner, lease, run_id, owner, takeover, now)
        if conn.execute(self.sql["claim"], params).rowcount == 0:
            return None
        return self._load(conn, run_id)

    def renew(self, conn: sqlite3.Connection, owner: str, lease: int, run_ids: Sequence[str]) -> int:
        """Extend the leases ``owner`` holds on ``run_ids``; how many."""
        return self._transaction(conn, True, self._renew, owner, lease, run_ids)

    def _renew(self, conn: sqlite3.Connection, owner: str, lease: int, run_ids: Sequence[str]) -> int:
        count = 0
        for start in range(0, len(run_ids), _CHUNK):
            chunk = run_ids[start : start + _CHUNK]
            count += conn.execute(self.sql.with_marks("renew", len(chunk)), [lease, owner, *chunk]).rowcount
        return count

    def release(self, conn: sqlite3.Connection, run_id: str, owner: str) -> None:
        """Drop ``owner``'s claim on the run."""
        self._written.pop(run_id, None)
        self._transaction(conn, True, lambda c: c.execute(self.sql["release"], (run_id, owner)))

    # --- signals --------------------------------------------------------------------------

    def add_signal(
        self,
        conn: sqlite3.Connection,
        run_id: str,
        name: str,
        payload: str | None,
        at: int,
        limit: int | None,
    ) -> SignalRecord | None:
        """Store a signal for an unfinished run (and wake it if suspended), unless ``limit``
        untaken signals of that name are stored already."""
        self._written.pop(run_id, None)  # it may set wake_at
        return self._transaction(conn, True, self._add_signal, run_id, name, payload, at, limit)

    def _add_signal(
        self,
        conn: sqlite3.Connection,
        run_id: str,
        name: str,
        payload: str | None,
        at: int,
        limit: int | None,
    ) -> SignalRecord | None:
        found = conn.execute(self.sql["run_status"], (run_id,)).fetchone()
        if found is None or found[0] in FINISHED_VALUES:
            return None
        untaken = self.sql["signals_untaken"]
        if limit is not None and conn.execute(untaken, (run_id, name)).fetchone()[0] >= limit:
            raise UnknownSignalError(duplicate_signal(run_id, name), run_id=run_id)
        signal_id = conn.execute(self.sql["signal_insert"], (run_id, name, payload, at)).lastrowid
        if found[0] == RunStatus.SUSPENDED.value:
            conn.execute(self.sql["run_wake"], (at, run_id))
        return decode_signal((signal_id, run_id, name, payload, at, None))

    def take_signal(self, conn: sqlite3.Connection, run_id: str, name: str, seq: int) -> SignalRecord | None:
        """The signal visit ``seq`` took, else the oldest untaken one, now taken by ``seq``."""
        return self._transaction(conn, True, self._take_signal, run_id, name, seq)

    def _take_signal(self, conn: sqlite3.Connection, run_id: str, name: str, seq: int) -> SignalRecord | None:
        row = conn.execute(self.sql["signal_taken"], (run_id, name, seq)).fetchone()
        if row is not None:
            return decode_signal(row)
        row = conn.execute(self.sql["signal_untaken"], (run_id, name)).fetchone()
        if row is None:
            return None
        conn.execute(self.sql["signal_take"], (seq, row[0]))
        return decode_signal((*row[:5], seq))

    def list_signals(self, conn: sqlite3.Connection, run_id: str) -> list[SignalRecord]:
        """Every signal of a run, oldest first."""
        rows = self._transaction(conn, False, self._rows, "signals_select", (run_id,))
        return [decode_signal(row) for row in rows]

    # --- workers --------------------------------------------------------------------------

    def _rows(self, conn: sqlite3.Connection, name: str, params: Sequence[Any]) -> list[Row]:
        return conn.execute(self.sql[name], params).fetchall()

    def headers(self, conn: sqlite3.Connection, name: str, params: Sequence[Any]) -> list[RunRecord]:
        """Runs (without step records) returned by the query ``name``; unreadable ones skipped."""
        return _readable(self._transaction(conn, False, self._rows, name, params), decode_run)

    def next_wake(self, conn: sqlite3.Connection) -> datetime | None:
        """The earliest wake_at of a waiting run."""
        rows = self._transaction(conn, False, self._rows, "next_wake", ())
        return from_micros(rows[0][0])

    def request_cancel(self, conn: sqlite3.Connection, run_id: str, request: str) -> bool:
        """Record a cancellation request on an unfinished run."""
        update = self.sql["request_cancel"]
        return self._transaction(conn, True, lambda c: bool(c.execute(update, (request, run_id)).rowcount))


def _readable(rows: Sequence[Row], decode: Callable[[Row], RunRecord]) -> list[RunRecord]:
    """The rows that decode; each one that does not is logged (its run id and column) and skipped."""
    found = []
    for row in rows:
        try:
            found.append(decode(row))
        except StorageCorruptedError as exc:
            logger.error("skipped an unreadable run: %s", exc, extra={"run_id": row[0]})
    return found
