"""What is PostgresStorage's own (the conformance suite runs on it through conftest's
``storage`` fixture): names, errors at open, from_url, lost connections mid-run."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import attrs
import pytest
from postgres_support import drop_schema, new_schema, postgres_dsn, schema_storage

from flux import FluxEngine, RunStatus, StepContext, StepStatus, create_workflow
from flux.errors import LeaseLostError, SchemaVersionError, StorageError, UnknownSignalError
from flux.records import ErrorInfo, RunFilter, RunRecord, checkpointed
from flux.storage import PostgresStorage, from_url
from flux.storage._postgres_conn import READ_SIZE
from flux.storage._postgres_sql import MIGRATIONS, Statements
from flux.storage._sqlite_rows import encode_input, encode_run
from flux.storage._sqlite_schema import STEP_COLUMNS
from flux.testing._factories import at, run_record, step_record


@pytest.fixture
async def pg() -> AsyncIterator[PostgresStorage]:
    async for store in schema_storage():
        yield store


# --- names and arguments ------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"schema": "bad-name"},
        {"schema": 'x"; DROP TABLE y; --'},
        {"schema": ""},
        {"schema": "a" * 64},
        {"table_prefix": "1x_"},
        {"table_prefix": "flux.runs"},
        {"table_prefix": "p" * 49},
        {"min_size": 0},
        {"min_size": 5, "max_size": 2},
    ],
)
def test_bad_names_and_pool_sizes_are_refused_at_construction(options: dict[str, Any]) -> None:
    """Tried: a dash, an injection attempt, empty, too long, a leading digit, a dot, pool sizes."""
    with pytest.raises(ValueError, match=r"schema|table_prefix|min_size"):
        PostgresStorage("postgresql://localhost/db", **options)


def test_from_url_names_postgres_with_schema_and_prefix() -> None:
    """``postgresql://`` and ``postgres://`` open PostgresStorage; schema and prefix come from the query."""
    url = "postgresql://app:pw@db.internal:6543/flux?schema=jobs&table_prefix=t_&sslmode=disable"
    storage = from_url(url)
    assert isinstance(storage, PostgresStorage)
    assert (storage.schema, storage.table_prefix) == ("jobs", "t_")
    assert storage.dsn == "postgresql://app:pw@db.internal:6543/flux?sslmode=disable"
    assert "pw" not in repr(storage)
    assert isinstance(from_url("postgres://localhost/db"), PostgresStorage)


# --- errors at open -----------------------------------------------------------------------


def _with(dsn: str, *, netloc: str | None = None, path: str | None = None) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(dsn)
    return parts._replace(netloc=netloc or parts.netloc, path=path or parts.path).geturl()


async def test_open_errors_name_host_and_database_never_the_password() -> None:
    """Tried: an unreachable port, a missing database, an unknown role, a malformed port."""
    dsn = postgres_dsn()
    unreachable = _with(dsn, netloc="postgres:s3cret-pw@127.0.0.1:1")
    missing = _with(dsn, netloc="postgres:s3cret-pw@127.0.0.1:5432", path="/no_such_db_flux")
    unknown_role = _with(dsn, netloc="no_such_role_flux:s3cret-pw@127.0.0.1:5432")
    bad_port = _with(dsn, netloc="postgres:s3cret-pw@127.0.0.1:notaport")
    cases = [
        (unreachable, "cannot reach PostgreSQL database 'test' on 127.0.0.1:1"),
        (missing, "PostgreSQL database 'no_such_db_flux' on 127.0.0.1:5432 does not exist"),
        (unknown_role, "PostgreSQL database 'test' on 127.0.0.1:5432 refused the credentials"),
        (bad_port, "postgresql://user:password@host:5432/database"),
    ]
    for bad, expected in cases:
        storage = PostgresStorage(bad, schema=new_schema())
        with pytest.raises(StorageError) as caught:
            await storage.init()
        assert expected in str(caught.value), str(caught.value)
        assert "s3cret-pw" not in str(caught.value)
        await storage.close()


async def test_a_newer_schema_version_is_refused(pg: PostgresStorage) -> None:
    """Tables written by a newer flux are not touched: the error says to upgrade."""
    conn = await asyncpg.connect(postgres_dsn())
    try:
        await conn.execute(f'INSERT INTO "{pg.schema}".flux_schema VALUES (99, $1, now())', "from the future")
    finally:
        await conn.close()
    newer = PostgresStorage(postgres_dsn(), schema=pg.schema)
    with pytest.raises(SchemaVersionError, match=r"version 99.*pip install -U flux-workflow"):
        await newer.init()
    await newer.close()


async def test_several_processes_opening_at_once_migrate_once() -> None:
    """Concurrent opens of a new schema: the advisory lock lets one migrate, the rest see it done."""
    dsn, schema = postgres_dsn(), new_schema()
    stores = [PostgresStorage(dsn, schema=schema, min_size=1, max_size=1) for _ in range(5)]
    try:
        await asyncio.gather(*(store.init() for store in stores))
        conn = await asyncpg.connect(dsn)
        try:
            versions = await conn.fetch(f'SELECT version FROM "{schema}".flux_schema')
        finally:
            await conn.close()
        assert [row[0] for row in versions] == [m.version for m in MIGRATIONS]  # each once
    finally:
        for store in stores:
            await store.close()
        await drop_schema(dsn, schema)


async def test_a_version_3_schema_is_migrated_and_keeps_its_labelled_runs() -> None:
    """Migration 4 replaces the generated ``label_index`` column by an index on the labels
    expression: runs stored before it keep their labels, and ``list(labels=)`` still finds them."""
    dsn, schema = postgres_dsn(), new_schema()
    sql = Statements(schema, "flux_")
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute(f'CREATE SCHEMA "{schema}"')
            await conn.execute(sql["create_version_table"])
            for migration in MIGRATIONS[:3]:
                await conn.execute(";\n".join(sql.migration(migration)))
                await conn.execute(sql["record_version"], migration.version, migration.description)
        old = run_record("old-run", labels={"tenant": "acme", "tier": "gold"})
        other = run_record("other-run", labels={"tenant": "zeta"})
        for run in (old, other):
            no_steps: list[list[Any]] = [[]] * len(STEP_COLUMNS)
            await conn.execute(sql["create"], *encode_run(run, encode_input(run)), *no_steps)
        store = PostgresStorage(dsn, schema=schema, min_size=1, max_size=2)
        try:
            found = await store.list(RunFilter(labels={"tenant": "acme"}))
            assert [run.id for run in found] == ["old-run"]
            assert found[0].labels == {"tenant": "acme", "tier": "gold"}
        finally:
            await store.close()
        columns = await conn.fetch(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = $1 AND table_name = 'flux_runs'",
            schema,
        )
        assert "label_index" not in {row[0] for row in columns}
        version = await conn.fetchval(f'SELECT max(version) FROM "{schema}".flux_schema')
        assert version == MIGRATIONS[-1].version
    finally:
        await conn.close()
        await drop_schema(dsn, schema)


# --- a tick: only updated_at and the lease written -----------------------------------------


def ticked(run: RunRecord, seconds: float) -> RunRecord:
    """``run`` as the engine's next checkpoint makes it: only its times changed."""
    return checkpointed(run, at(seconds), at(seconds + 30), {})


async def _second(pg: PostgresStorage) -> PostgresStorage:
    """Another PostgresStorage on ``pg``'s schema (another process, as far as the rows go)."""
    other = PostgresStorage(postgres_dsn(), schema=pg.schema, min_size=1, max_size=2)
    await other.init()
    return other


async def test_a_tick_writes_the_times_and_stays_fenced(pg: PostgresStorage) -> None:
    """A time-only checkpoint writes the run's new times and the steps; once another owner
    took the run, it raises LeaseLostError and writes none of its steps."""
    b = await _second(pg)
    try:
        run = run_record(owner="A", lease_expires_at=at(30))
        await pg.checkpoint(run, [step_record(0, StepStatus.RUNNING)])
        run = ticked(run, 1)
        await pg.checkpoint(run, [step_record(0), step_record(1, StepStatus.RUNNING)])
        steps = (step_record(0), step_record(1, StepStatus.RUNNING))
        assert await pg.load("run-1") == attrs.evolve(run, steps=steps)
        assert await b.claim("run-1", "B", at(100), now=at(40)) is not None
        with pytest.raises(LeaseLostError, match="owned by B"):
            await pg.checkpoint(ticked(run, 2), [step_record(1), step_record(2, StepStatus.RUNNING)])
        loaded = await pg.load("run-1")
        assert loaded is not None and loaded.owner == "B" and loaded.steps == steps
    finally:
        await b.close()


async def test_a_tick_clears_the_columns_a_step_record_no_longer_has(pg: PostgresStorage) -> None:
    """A tick's statement names only the columns its step records hold: the upsert must still
    clear those the stored record had (an attempt's error and output, once it is retried)."""
    run = run_record(owner="A", lease_expires_at=at(30))
    await pg.checkpoint(run, [step_record(0, StepStatus.RUNNING)])
    error = ErrorInfo(type="E", message="boom")
    failed = step_record(0, StepStatus.FAILED, error=error, output={"partial": 1})
    run = ticked(run, 1)
    await pg.checkpoint(run, [failed])
    loaded = await pg.load("run-1")
    assert loaded is not None and loaded.steps == (failed,)
    retried = step_record(0, StepStatus.RUNNING, attempts=2)
    run = ticked(run, 2)
    await pg.checkpoint(run, [retried, step_record(1, StepStatus.PENDING)])
    assert await pg.load("run-1") == attrs.evolve(run, steps=(retried, step_record(1, StepStatus.PENDING)))


async def test_a_run_taken_back_is_written_whole(pg: PostgresStorage) -> None:
    """Fields another process changed while it held the run are written over by the first
    checkpoint after the run is taken back, even one that only moves the times."""
    b = await _second(pg)
    try:
        run = run_record(owner="A", lease_expires_at=at(30))
        await pg.checkpoint(run)
        taken = await b.claim("run-1", "B", at(100), now=at(40))
        assert taken is not None
        await b.checkpoint(attrs.evolve(taken, fingerprint="fp-2", deadline_at=at(500)))
        await b.release("run-1", "B")
        assert await pg.claim("run-1", "A", at(130), now=at(100)) is not None
        run = ticked(run, 101)
        await pg.checkpoint(run)  # its fields are A's last ones: all of them written again
        assert await pg.load("run-1") == run
    finally:
        await b.close()


async def test_a_failed_checkpoint_is_not_taken_for_written(pg: PostgresStorage) -> None:
    """Tried: a step name with a lone surrogate (PostgreSQL text cannot hold it). The failed
    checkpoint writes nothing, and the next one, which only moves the times past it, is
    written whole."""
    run = run_record(owner="A", lease_expires_at=at(30))
    await pg.checkpoint(run)
    changed = attrs.evolve(run, deadline_at=at(900))
    with pytest.raises(StorageError, match="invalid input"):
        await pg.checkpoint(changed, [step_record(0, StepStatus.RUNNING, step="bad \ud800")])
    assert await pg.load("run-1") == run
    run = ticked(changed, 2)
    await pg.checkpoint(run)  # built on the failed one: written whole
    assert await pg.load("run-1") == run


async def test_a_tick_finds_its_run_by_primary_key_before_any_statistics(pg: PostgresStorage) -> None:
    """The planner must not walk an owner's runs to find one of them (it did, through an
    index on owner, on a table without statistics: every checkpoint then cost O(runs))."""
    for index in range(50):
        await pg.checkpoint(run_record(f"run-{index}", owner="A", lease_expires_at=at(30)))
    conn = await asyncpg.connect(postgres_dsn())
    try:
        statement = await conn.prepare("EXPLAIN " + Statements(pg.schema, "flux_")["checkpoint_tick"])
        plan = "\n".join(row[0] for row in await statement.fetch(1, 2, "run-7", "A", *[None] * 32))
    finally:
        await conn.close()
    assert "flux_runs_pkey" in plan, plan


async def test_connections_read_their_socket_64_kib_at_a_time(pg: PostgresStorage) -> None:
    """asyncio's default read buffer (256 KiB, a new one per read) costs more than a reply's
    read; the pool's connections, the checkpoint writer's (also from a pool given to the
    storage) and the waker's read READ_SIZE at a time, and a reply larger than that still
    arrives whole."""
    async with pg._acquire() as conn:
        assert conn._transport.max_size == READ_SIZE
    given = await asyncpg.create_pool(postgres_dsn(), min_size=1, max_size=3)
    storage = PostgresStorage(pool=given, schema=pg.schema)
    try:
        big = {"blob": "x" * (3 * READ_SIZE)}
        await storage.checkpoint(run_record("big", input=big))
        assert storage._writer._conn._transport.max_size == READ_SIZE
        loaded = await storage.load("big")
        assert loaded is not None and loaded.input == big
    finally:
        await storage.close()
        await given.close()
    async with pg._connect() as listener:
        assert listener._transport.max_size == READ_SIZE


# --- faults mid-run -----------------------------------------------------------------------


async def test_runs_complete_when_the_engines_connections_are_terminated_mid_run(
    pg: PostgresStorage,
) -> None:
    """``pg_terminate_backend`` on every connection of the engine, from inside a step of each
    of 10 concurrent runs: every run completes and no completed step runs twice."""
    calls: Counter[tuple[str, str]] = Counter()
    terminated = 0

    def count(ctx: StepContext[Any]) -> str:
        calls[(ctx.run_id, ctx.step)] += 1
        return ctx.step

    async def terminate(ctx: StepContext[Any]) -> str:
        nonlocal terminated
        calls[(ctx.run_id, ctx.step)] += 1
        admin = await asyncpg.connect(postgres_dsn())
        try:
            killed = await admin.fetchval(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = $1 AND pid <> pg_backend_pid()) AS t",
                pg.application_name,
            )
            terminated += killed
        finally:
            await admin.close()
        return ctx.step

    flow = create_workflow("terminated").step("before", count).step("kill", terminate).step("after", count)
    async with FluxEngine(storage=pg, poll_interval=5) as engine:
        results = await asyncio.gather(*(engine.execute(flow, run_id=f"r{i}") for i in range(10)))
    assert terminated > 0
    assert [r.status for r in results] == [RunStatus.COMPLETED] * 10
    assert set(calls.values()) == {1} and len(calls) == 30


# --- wake-ups -----------------------------------------------------------------------------


async def test_a_stored_signal_is_announced_by_its_own_transaction(pg: PostgresStorage) -> None:
    """add_signal NOTIFYs the waker's channel as it commits; a refused signal (past its limit,
    or for an unknown run) announces nothing, and the waker does not send the signal again."""
    heard: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(postgres_dsn())
    waker = pg.waker()
    try:
        await listener.add_listener(waker.channel, lambda *args: heard.put_nowait(args[-1]))
        await pg.create(run_record("waiting", status=RunStatus.SUSPENDED))
        await pg.add_signal("waiting", "go", {"n": 1}, at(1), limit=1)
        assert await asyncio.wait_for(heard.get(), timeout=10) == "signal waiting"
        with pytest.raises(UnknownSignalError):
            await pg.add_signal("waiting", "go", {"n": 2}, at(2), limit=1)
        assert await pg.add_signal("unknown", "go", None, at(2)) is None
        await waker.open(lambda: None)
        waker.publish("signal", "waiting")  # announced already: not sent again
        await waker.close()
        await listener.execute("SELECT pg_notify($1, 'end')", waker.channel)  # marks the end
        assert await asyncio.wait_for(heard.get(), timeout=10) == "end"
    finally:
        await listener.close()


async def test_a_pool_of_one_connection_is_shared_by_checkpoints_and_other_calls() -> None:
    """With max_size=1 the checkpoint writer keeps no connection between batches: concurrent
    runs (checkpoints, claims, loads) all get through the one connection."""
    dsn, schema = postgres_dsn(), new_schema()
    store = PostgresStorage(dsn, schema=schema, min_size=1, max_size=1)
    flow = create_workflow("single").step("a", lambda ctx: 1).step("b", lambda ctx: 2)
    try:
        async with FluxEngine(storage=store, workflows=[flow], poll_interval=5) as engine:
            started = [await engine.start(flow) for _ in range(5)]
            async with engine.worker(concurrency=5):
                runs = asyncio.gather(*(engine.execute(flow) for _ in range(5)))
                executed = await asyncio.wait_for(runs, timeout=60)  # a held connection: stuck
                waited = [await engine.wait_result(run_id, timeout=30) for run_id in started]
    finally:
        await drop_schema(dsn, schema)
    assert {r.status for r in executed + waited} == {RunStatus.COMPLETED}
