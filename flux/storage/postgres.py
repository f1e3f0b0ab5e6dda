"""PostgresStorage: runs in a PostgreSQL database (asyncpg), shared by workers on many hosts.

Every call is one statement (one round trip) on a pooled connection, except ``load``,
``claim`` (a statement, then the run's step records, on one connection), ``list`` (two) and
``create`` with an idempotency key (a transaction under the key's advisory lock). Checkpoints
use group commit: those that arrive while one is being written share the next statement, on
a pooled connection held between batches. Claims skip rows another claimer has locked
(``FOR UPDATE SKIP LOCKED``). A lost connection is retried with backoff, so a server restart
or a killed backend delays calls instead of failing runs.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

from flux.errors import (
    InvalidRunStateError,
    SchemaVersionError,
    StorageCorruptedError,
    StorageError,
    UnknownSignalError,
)
from flux.records import JSON, RunFilter, RunRecord, SignalRecord, StepRecord
from flux.serde import dumps
from flux.status import RunStatus
from flux.storage._common import FINISHED, duplicate_signal, finished_statuses, only_times_moved, remember
from flux.storage._group_commit import GroupCommit
from flux.storage._postgres_batch import BatchWriter, Checkpoint, columns
from flux.storage._postgres_conn import connect, describe, logger, open_pool, retrying
from flux.storage._postgres_sql import LATEST_VERSION, MIGRATIONS, Statements
from flux.storage._postgres_wake import PostgresWaker
from flux.storage._sqlite_rows import (
    Row,
    decode_run,
    decode_signal,
    encode_input,
    encode_json,
    encode_run,
    encode_step,
    encode_tick,
    from_micros,
    micros,
    step_params,
)
from flux.storage._sqlite_schema import STEP_COLUMNS

T = TypeVar("T")
_RUNNING = RunStatus.RUNNING
_CLOSE_WAIT = 10.0  # seconds close() waits for connections in use before cutting them
ANNOUNCED = frozenset({"signal"})
"""Wake-ups that the storage's own statements NOTIFY (in the writing transaction), so that
its waker does not send them again."""


class PostgresStorage:
    """Runs kept in PostgreSQL: the scale-out backend (``pip install 'flux-workflow[postgres]'``).

    Args:
        dsn: a libpq connection string, ``postgresql://user:password@host:5432/database``
            (None: the ``PG*`` environment variables).
        pool: an asyncpg pool to use instead of opening one (it is not closed by ``close``).
        schema: the PostgreSQL schema holding the tables (created if missing).
        table_prefix: prefix of every table name, so several stores can share one schema.
        min_size / max_size: the size of the pool opened from ``dsn``.

    Tables are created and migrated on ``init()`` (or the first call), under an advisory lock,
    so several processes may open one database at once.

    >>> storage = PostgresStorage("postgresql://app@db.internal/flux", schema="jobs")
    >>> storage.schema, storage.table_prefix
    ('jobs', 'flux_')

    Raises (from ``init`` or any call that opens the database):
        StorageError: the DSN is malformed, the server cannot be reached, the database does not
            exist or the credentials are refused (the message names host and database, never
            the password), or the driver is not installed.
        SchemaVersionError: the tables were written by a newer flux.
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        pool: Any | None = None,
        schema: str = "public",
        table_prefix: str = "flux_",
        min_size: int = 2,
        max_size: int = 10,
    ) -> None:
        if not isinstance(min_size, int) or not isinstance(max_size, int) or not 1 <= min_size <= max_size:
            raise ValueError(
                f"need 1 <= min_size <= max_size (connections in the pool), got min_size={min_size!r}, "
                f"max_size={max_size!r}"
            )
        if dsn is not None and not isinstance(dsn, str):
            raise TypeError(f"dsn must be a str like 'postgresql://user@host/db', got {type(dsn).__name__}")
        self.dsn = dsn
        self.schema = schema
        self.table_prefix = table_prefix
        self.min_size, self.max_size = min_size, max_size
        self.application_name = f"flux/{schema}"
        """The ``application_name`` of the pool's connections (``pg_stat_activity`` shows it)."""
        self._sql = Statements(schema, table_prefix)
        self._where = describe(dsn)[0] if pool is None or dsn else "PostgreSQL (the given pool)"
        self._pool = pool
        self._own_pool = pool is None
        self._opening = asyncio.Lock()
        self._ready = False
        self._writer = BatchWriter(self._pool_or_error, self._sql, self._where, self._holds)
        self._commits: GroupCommit[Checkpoint] = GroupCommit(self._writer.write)
        self._wakers: builtins.list[PostgresWaker] = []
        # Per in-flight run, the record and row of its last checkpoint that wrote a whole row:
        # a run's input never changes, so a checkpoint given the same input object sends none
        # (the stored row keeps it), and one that moves only the times is a tick.
        self._known: dict[str, tuple[RunRecord, Row]] = {}

    def __repr__(self) -> str:
        return f"PostgresStorage({self._where}, schema={self.schema!r}, table_prefix={self.table_prefix!r})"

    async def __aenter__(self) -> PostgresStorage:
        await self.init()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # --- connection and schema ------------------------------------------------------------

    async def init(self) -> None:
        """Open the pool and bring the tables to the latest schema version. Safe to call twice."""
        if not self._ready:
            async with self._opening:
                if not self._ready:
                    await self._open()

    async def _open(self) -> None:
        if self._pool is None:
            self._pool = await open_pool(self.dsn, self.min_size, self.max_size, self.application_name)
        try:
            await retrying(self._where, self._migrate)
        except BaseException:
            await self._close_pool()
            raise
        self._ready = True

    async def _migrate(self) -> None:
        sql = self._sql
        async with self._acquire() as conn:
            if await conn.fetchval(sql["version_table"], sql.version_table) is not None:
                version = await conn.fetchval(sql["current_version"])
                if version == LATEST_VERSION:
                    return
                self._check_not_newer(version)
            async with conn.transaction():
                # Several processes may open at once: one migrates, the others wait, then see it done.
                await conn.execute(sql["lock"], sql.lock_key)
                await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{sql.schema}"')
                await conn.execute(sql["create_version_table"])
                version = await conn.fetchval(sql["current_version"])
                self._check_not_newer(version)
                for migration in MIGRATIONS:
                    if migration.version > version:
                        await conn.execute(";\n".join(sql.migration(migration)))  # one round trip
                        await conn.execute(sql["record_version"], migration.version, migration.description)

    def _check_not_newer(self, version: int) -> None:
        if version > LATEST_VERSION:
            raise SchemaVersionError(
                f"{self._where} (schema {self.schema!r}, prefix {self.table_prefix!r}) has flux schema "
                f"version {version}, but this flux knows versions up to {LATEST_VERSION}: it was "
                "written by a newer flux. Upgrade flux (pip install -U flux-workflow) or use "
                "another schema or table_prefix."
            )

    async def close(self) -> None:
        """Wait for queued checkpoints, stop the wakers made by :meth:`waker`, then close the
        pool (if opened here). Safe to call twice."""
        await self._commits.wait_idle()
        if self._pool is not None:
            await self._writer.close()
        wakers, self._wakers = self._wakers, []
        for waker in wakers:
            await waker.close()
        await self._close_pool()

    async def _close_pool(self) -> None:
        self._ready = False
        if self._own_pool and self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                async with asyncio.timeout(_CLOSE_WAIT):
                    await pool.close()
            except TimeoutError:  # a connection still in use: cut it
                pool.terminate()

    def waker(self) -> PostgresWaker:
        """Wake-ups over LISTEN/NOTIFY on this database (a :class:`flux.wake.Waker`).

        ``FluxEngine`` uses it on its own when given a PostgresStorage.
        """
        waker = PostgresWaker(
            self._connect, self._acquire, self._sql["notify"], self._sql.channel, self._where, ANNOUNCED
        )
        self._wakers.append(waker)
        return waker

    @contextlib.asynccontextmanager
    async def _connect(self) -> AsyncIterator[Any]:
        """A connection for the waker's LISTEN: one of its own (a pooled one is reset when
        released); with a pool given and no DSN, one held from that pool."""
        if self._pool is None:
            raise StorageError(f"{self!r} is closed; open it with init() first")
        if self.dsn is None and not self._own_pool:
            async with self._pool.acquire() as conn:
                yield conn
            return
        conn = await connect(self.dsn, self.application_name)
        try:
            yield conn
        finally:
            conn.terminate()  # no goodbye round trip: the server may be gone already

    def _pool_or_error(self) -> Any:
        if self._pool is None:
            raise StorageError(f"{self!r} is closed; open it with init() first")
        return self._pool

    def _acquire(self) -> Any:
        return self._pool_or_error().acquire()

    def _holds(self) -> bool:
        """Whether checkpoints keep a connection of the pool between batches: when the pool
        can spare it (a LISTEN without a DSN takes one of a given pool too)."""
        spare = 2 if self.dsn is not None or self._own_pool else 3
        return self._pool is not None and self._pool.get_max_size() >= spare

    async def _call(self, method: str, sql: str, *args: Any) -> Any:
        """``conn.<method>(sql, *args)`` on a pooled connection, retried while it is lost."""
        await self.init()

        async def attempt() -> Any:
            async with self._acquire() as conn:
                return await getattr(conn, method)(sql, *args)

        return await retrying(self._where, attempt)

    async def _with_steps(self, run_id: str, sql: str, *args: Any) -> RunRecord | None:
        """The row of run ``run_id`` that ``sql`` returns, with the run's step records read
        right after it on the same pooled connection; None when there is no row."""
        await self.init()

        async def attempt() -> Any:
            async with self._acquire() as conn:
                row = await conn.fetchrow(sql, *args)
                return None if row is None else (row, await conn.fetch(self._sql["steps_select"], run_id))

        found = await retrying(self._where, attempt)
        return None if found is None else decode_run(*found)

    # --- runs -----------------------------------------------------------------------------

    async def save(self, run: RunRecord) -> None:
        """Insert or replace ``run`` and all its step records; ``created_at`` is kept on update."""
        steps = [encode_step(run.id, record) for record in run.steps]
        row = encode_run(run, encode_input(run))
        self._forget(run.id)
        await self._call("execute", self._sql["save"], *row, *columns(steps, len(STEP_COLUMNS)))

    async def create(
        self, run: RunRecord, *, key: str | None = None, key_expires_at: datetime | None = None
    ) -> str | None:
        """Insert a new run with its step records, never over a stored one; with ``key``, bind
        that idempotency key to it in the same transaction, unless the key is bound to a
        stored run unexpired at ``run.created_at``: then store nothing and return that run's id.

        Raises:
            InvalidRunStateError: the run's id is taken (nothing is written).
        """
        steps = columns([encode_step(run.id, record) for record in run.steps], len(STEP_COLUMNS))
        row = encode_run(run, encode_input(run))
        self._forget(run.id)
        if key is None:
            created = await self._call("fetchval", self._sql["create"], *row, *steps)
            bound = None
        else:
            if key_expires_at is None:
                raise ValueError("create(key=...) needs key_expires_at")
            binding = (run.workflow, key, micros(key_expires_at, "key_expires_at"))
            bound, created = await self._keyed(row, steps, binding)
        if bound is not None:
            return str(bound)
        if created is None:
            raise InvalidRunStateError(f"run id {run.id!r} is already stored", run_id=run.id)
        return None

    async def _keyed(self, row: Row, steps: builtins.list[Any], binding: tuple[str, str, int | None]) -> Any:
        """``create_keyed`` under the key's advisory lock; (bound run id, created run id)."""
        await self.init()

        async def attempt() -> Any:
            async with self._acquire() as conn, conn.transaction():
                await conn.execute(self._sql["key_lock"], binding[0], binding[1])
                return tuple(await conn.fetchrow(self._sql["create_keyed"], *row, *steps, *binding))

        return await retrying(self._where, attempt)

    async def load(self, run_id: str) -> RunRecord | None:
        """The stored run with its step records in ``seq`` order, or None."""
        return await self._with_steps(run_id, self._sql["run_select"], run_id)

    async def list(self, filter: RunFilter | None = None) -> builtins.list[RunRecord]:
        """Runs matching ``filter``, newest first (ties: the first stored last), with steps."""
        filter = filter or RunFilter()
        statuses = sorted(s.value for s in filter.status) if filter.status is not None else None
        if statuses == []:
            return []
        labels = dumps(dict(sorted(filter.labels.items()))) if filter.labels else None
        args = (filter.workflow, statuses, labels, filter.limit, filter.offset)
        rows = await self._call("fetch", self._sql["list"], *args)
        steps: dict[str, builtins.list[Any]] = {row[0]: [] for row in rows}
        if steps:
            for step in await self._call("fetch", self._sql["steps_select_many"], builtins.list(steps)):
                steps[step[0]].append(step)
        return _readable(rows, lambda row: decode_run(row, steps[row[0]]))

    async def delete(self, run_id: str) -> bool:
        """Remove a run, its step records, signals and idempotency keys; False when there was none."""
        self._forget(run_id)
        return bool(await self._call("fetchval", self._sql["delete"], run_id))

    async def checkpoint(self, run: RunRecord, steps: Sequence[StepRecord] = ()) -> None:
        """Write ``run``'s own fields and upsert ``steps``, atomically, in one statement.

        Checkpoints arriving while another is being written share the next statement. While
        a run runs and only its times move, only those are written (a tick).

        Raises:
            LeaseLostError: ``run.owner`` is set and the stored run has another owner (nothing
                of this checkpoint is written; other checkpoints of the batch are).
            StorageError: a value is not JSON, or the database failed.
        """
        item = self._encode(run, steps)
        if not self._ready:
            await self.init()
        await self._commits.submit(item)
        if item[1] is None:  # a whole row, now stored: later checkpoints build on it
            if run.status in FINISHED:
                self._known.pop(run.id, None)
            else:
                remember(self._known, run.id, (run, item[0]))

    def _encode(self, run: RunRecord, steps: Sequence[StepRecord]) -> Checkpoint:
        """A checkpoint of ``run`` and ``steps``: a tick when ``run`` holds the objects of the
        last stored whole-row checkpoint but for its times, else the whole row (its input None
        when the stored one stays)."""
        known = self._known.get(run.id)
        if known is not None and run.input is known[0].input:
            last, row = known
            if run.status is _RUNNING and run.owner is not None and only_times_moved(run, last):
                tick = encode_tick(run)
                if tick is not None:
                    return row, tick, [step_params(run.id, record) for record in steps]
            text = None
        else:
            text = encode_input(run) or "null"
        return encode_run(run, text), None, [encode_step(run.id, record) for record in steps]

    def _forget(self, run_id: str) -> None:
        """Forget the last checkpoint of a run whose row a call other than a checkpoint changed."""
        self._known.pop(run_id, None)
        self._writer.forget((run_id,))

    async def prune(self, *, older_than: datetime, status: Sequence[RunStatus | str] | None = None) -> int:
        """Delete finished runs (of ``status``, default every finished one) that finished before
        ``older_than``; returns how many. Raises ``ValueError`` for an unfinished status."""
        statuses = sorted(s.value for s in finished_statuses(status))
        older = micros(older_than, "older_than")
        return int(await self._call("fetchval", self._sql["prune"], statuses, older))

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
        held by ``takeover``; returns it with its step records, or None. A run another claimer
        is taking at this moment is left to it."""
        lease, at = micros(lease_expires_at, "lease_expires_at"), micros(now, "now")
        self._forget(run_id)
        # Retried after a lost connection, a claim that went through is found again: its owner's.
        return await self._with_steps(run_id, self._sql["claim"], owner, lease, run_id, owner, takeover, at)

    async def renew(self, owner: str, lease_expires_at: datetime, run_ids: Sequence[str]) -> int:
        """Extend the lease of each of ``run_ids`` that ``owner`` holds (with a lease); how many."""
        lease = micros(lease_expires_at, "lease_expires_at")
        ids = sorted(set(run_ids))
        return _count(await self._call("execute", self._sql["renew"], lease, owner, ids)) if ids else 0

    async def release(self, run_id: str, owner: str) -> None:
        """Drop ``owner``'s claim on ``run_id`` (no-op if not the owner)."""
        self._forget(run_id)
        await self._call("execute", self._sql["release"], run_id, owner)

    # --- waiting and workers --------------------------------------------------------------

    async def add_signal(
        self, run_id: str, name: str, payload: JSON, at: datetime, *, limit: int | None = None
    ) -> SignalRecord | None:
        """Store a signal for an unfinished run and make a suspended run due at ``at``; with
        ``limit``, refuse (``UnknownSignalError``) when that many untaken ones are stored.
        The engines listening through :meth:`waker` hear of it as it commits."""
        text = encode_json(payload, f"the payload of signal {name!r}")
        when = micros(at, "at")
        sql, channel = self._sql["add_signal"], self._sql.channel
        signal_id = await self._call("fetchval", sql, run_id, name, text, when, limit, channel)
        if signal_id == -1:
            raise UnknownSignalError(duplicate_signal(run_id, name), run_id=run_id)
        return None if signal_id is None else decode_signal((signal_id, run_id, name, text, when, None))

    async def take_signal(self, run_id: str, name: str, seq: int) -> SignalRecord | None:
        """The signal visit ``seq`` took already, else the oldest untaken one, now taken."""
        row = await self._call("fetchrow", self._sql["take_signal"], run_id, name, seq)
        return None if row is None else decode_signal(tuple(row))

    async def list_signals(self, run_id: str) -> builtins.list[SignalRecord]:
        """Every signal stored for a run, oldest first."""
        rows = await self._call("fetch", self._sql["signals_select"], run_id)
        return [decode_signal(tuple(row)) for row in rows]

    async def due(self, now: datetime, limit: int) -> builtins.list[RunRecord]:
        """Pending and suspended runs with ``wake_at <= now``, earliest first, without steps."""
        rows = await self._call("fetch", self._sql["due"], micros(now, "now"), limit)
        return _readable(rows, decode_run)

    async def next_wake(self) -> datetime | None:
        """The earliest ``wake_at`` of a pending or suspended run."""
        return from_micros(await self._call("fetchval", self._sql["next_wake"]))

    async def orphans(self, now: datetime, host: str, limit: int) -> builtins.list[RunRecord]:
        """Running or rolling-back runs without a live lease, or owned on ``host``; no steps."""
        rows = await self._call("fetch", self._sql["orphans"], micros(now, "now"), host + "/", limit)
        return _readable(rows, decode_run)

    async def request_cancel(self, run_id: str, request: Mapping[str, JSON]) -> bool:
        """Record a cancellation request on an unfinished run; False if finished or unknown."""
        text = encode_json(dict(request), f"the cancellation request of run {run_id}")
        return _count(await self._call("execute", self._sql["request_cancel"], text, run_id)) > 0

    async def cancel_requests(self, owner: str) -> builtins.list[RunRecord]:
        """Unfinished runs held by ``owner`` with a cancellation requested; no steps."""
        return _readable(await self._call("fetch", self._sql["cancel_requests"], owner), decode_run)


def _readable(rows: Sequence[Any], decode: Callable[[Any], RunRecord]) -> builtins.list[RunRecord]:
    """The rows that decode; each one that does not is logged (its run id and column) and skipped."""
    found = []
    for row in rows:
        try:
            found.append(decode(row))
        except StorageCorruptedError as exc:
            logger.error("skipped an unreadable run: %s", exc, extra={"run_id": row[0]})
    return found


def _count(status: str) -> int:
    """The row count of a command status such as ``UPDATE 3``."""
    return int(status.rsplit(" ", 1)[-1])
