"""SQLiteStorage beyond the conformance suite: files, schema versions, bad input, group commit,
indexes, and two processes writing one file."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiosqlite
import attrs
import pytest

from flux import FluxEngine, create_workflow
from flux.errors import LeaseLostError, SchemaVersionError, StorageCorruptedError, StorageError
from flux.records import RunRecord, checkpointed
from flux.status import RunStatus, StepStatus
from flux.storage import SQLiteStorage
from flux.storage._sqlite_ops import SQLiteOps
from flux.storage._sqlite_schema import LATEST_VERSION, MIGRATIONS, Statements
from flux.testing._factories import at, full_run, run_record, step_record

WRITER = Path(__file__).parent / "sqlite_writer.py"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "flux.db"


def raw(path: Path, *statements: tuple[str, Sequence[Any]] | str) -> list[Any]:
    """Run statements on the file with plain sqlite3 (outside flux); the last one's rows."""
    with sqlite3.connect(path) as conn:
        rows: list[Any] = []
        for statement in statements:
            sql, params = (statement, ()) if isinstance(statement, str) else statement
            rows = conn.execute(sql, params).fetchall()
    conn.close()
    return rows


def contents(path: Path) -> bytes:
    return path.read_bytes()


def write(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def make_read_only(path: Path) -> None:
    path.chmod(0o444)


# --- files and the schema ---------------------------------------------------------------


async def test_runs_survive_reopening_the_file(db_path: Path) -> None:
    async with SQLiteStorage(db_path) as storage:
        await storage.save(full_run())
    async with SQLiteStorage(str(db_path)) as reopened:
        assert await reopened.load(full_run().id) == full_run()


async def test_datetimes_come_back_as_utc(db_path: Path) -> None:
    moment = datetime(2030, 6, 1, 12, 30, 15, 123456, tzinfo=timezone(timedelta(hours=-7)))
    async with SQLiteStorage(db_path) as storage:
        await storage.save(run_record(updated_at=moment))
        loaded = await storage.load("run-1")
    assert loaded is not None
    assert loaded.updated_at == moment
    assert loaded.updated_at.tzinfo is UTC


async def test_the_database_records_its_schema_version_and_uses_wal(db_path: Path) -> None:
    async with SQLiteStorage(db_path):
        pass
    versions = raw(db_path, "SELECT version, description FROM flux_schema ORDER BY version")
    assert versions == [(m.version, m.description) for m in MIGRATIONS]
    assert raw(db_path, "PRAGMA journal_mode") == [("wal",)]


async def test_an_older_schema_is_migrated_and_keeps_its_runs(db_path: Path) -> None:
    sql = Statements("flux_")
    first = MIGRATIONS[0]
    raw(
        db_path,
        sql["create_version_table"],
        *sql.migration(first),
        (sql["record_version"], (first.version, first.description, "2030-01-01")),
        ("INSERT INTO flux_runs (id, workflow, fingerprint, status, input, created_at, updated_at) "
         "VALUES ('old', 'flow', 'fp', 'suspended', '{\"n\": 1}', 0, 5)", ()),
        ("INSERT INTO flux_steps (run_id, seq, step, status, attempts) "
         "VALUES ('old', 0, 's0', 'completed', 1)", ()),
    )  # fmt: skip
    async with SQLiteStorage(db_path) as storage:
        old = await storage.load("old")
        assert old is not None
        assert (old.input, old.status, old.wake_at) == ({"n": 1}, "suspended", None)
        assert old.steps == (step_record(0, waiting_for=None),)
        assert await storage.add_signal("old", "go", 1, at(1)) is not None  # a table version 2 added
    assert raw(db_path, "SELECT MAX(version) FROM flux_schema") == [(LATEST_VERSION,)]


async def test_a_newer_schema_is_refused_and_left_alone(db_path: Path) -> None:
    async with SQLiteStorage(db_path) as storage:
        await storage.save(run_record())
    raw(db_path, (f"INSERT INTO flux_schema VALUES ({LATEST_VERSION + 1}, 'from the future', 'x')", ()))
    before = contents(db_path)
    with pytest.raises(SchemaVersionError, match=rf"version {LATEST_VERSION + 1}.*newer flux.*Upgrade"):
        await SQLiteStorage(db_path).init()
    assert contents(db_path) == before


async def test_a_file_that_is_not_sqlite_is_refused_and_left_alone(db_path: Path) -> None:
    garbage = bytes(range(256)) * 64
    write(db_path, garbage)
    storage = SQLiteStorage(db_path)
    with pytest.raises(StorageCorruptedError, match="not a SQLite database"):
        await storage.init()
    with pytest.raises(StorageCorruptedError):
        await storage.load("run-1")
    assert contents(db_path) == garbage
    assert sorted(p.name for p in db_path.parent.iterdir()) == ["flux.db"]


@pytest.mark.parametrize("how", ["chmod", "uri"])
async def test_a_read_only_database_can_be_read_but_not_written(db_path: Path, how: str) -> None:
    async with SQLiteStorage(db_path) as storage:
        await storage.save(run_record(steps=(step_record(0),)))
    if how == "chmod":  # detected from the mode bits, so that this holds for root as well
        make_read_only(db_path)
        storage = SQLiteStorage(db_path)
    else:
        storage = SQLiteStorage(f"file:{db_path}?mode=ro")
    before = contents(db_path)
    async with storage:
        assert storage.read_only
        assert await storage.load("run-1") == run_record(steps=(step_record(0),))
        with pytest.raises(StorageError, match=r"read-only.*writable"):
            await storage.save(run_record("new"))
        with pytest.raises(StorageError, match="read-only"):
            await storage.checkpoint(run_record(status=RunStatus.COMPLETED), [step_record(1)])
        assert [r.id for r in await storage.list()] == ["run-1"]
    assert contents(db_path) == before


async def test_a_missing_directory_is_reported(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=r"cannot open.*directory .* does not exist; create it"):
        await SQLiteStorage(tmp_path / "nope" / "flux.db").init()


def test_table_prefix_is_validated() -> None:
    for bad in ["", "1flux", "flux-", "flux_; DROP TABLE x", "é", "x" * 65]:
        with pytest.raises(ValueError, match="table_prefix"):
            SQLiteStorage(":memory:", table_prefix=bad)


async def test_two_prefixes_share_a_file_without_seeing_each_other(db_path: Path) -> None:
    async with (
        SQLiteStorage(db_path, table_prefix="a_") as first,
        SQLiteStorage(db_path, table_prefix="B9_") as second,
    ):
        await first.save(run_record("in-a"))
        await second.save(run_record("in-b"))
        assert [r.id for r in await first.list()] == ["in-a"]
        assert [r.id for r in await second.list()] == ["in-b"]


async def test_memory_databases_are_private() -> None:
    async with SQLiteStorage(":memory:") as first, SQLiteStorage(":memory:") as second:
        await first.save(run_record())
        assert await first.load("run-1") is not None
        assert await second.load("run-1") is None


# --- bad rows and bad values ------------------------------------------------------------


async def test_a_corrupted_json_column_names_the_run_and_column(db_path: Path) -> None:
    async with SQLiteStorage(db_path) as storage:
        for run_id in ("good", "bad-input", "bad-step"):
            await storage.save(run_record(run_id, input={"ok": 1}, steps=(step_record(0, output=[1]),)))
        raw(
            db_path,
            ("UPDATE flux_runs SET input = '{\"truncated\": ' WHERE id = 'bad-input'", ()),
            ("UPDATE flux_steps SET output = 'not json' WHERE run_id = 'bad-step'", ()),
        )
        with pytest.raises(StorageCorruptedError, match=r"run 'bad-input': column runs\.input .*delete"):
            await storage.load("bad-input")
        with pytest.raises(StorageCorruptedError, match=r"run 'bad-step': column steps\.output .*seq 0"):
            await storage.load("bad-step")
        good = await storage.load("good")
        assert good is not None and good.input == {"ok": 1}
        assert await storage.delete("bad-input") is True
        assert await storage.delete("bad-step") is True
        assert [r.id for r in await storage.list()] == ["good"]


async def test_an_unknown_status_in_a_row_is_reported_as_corruption(db_path: Path) -> None:
    async with SQLiteStorage(db_path) as storage:
        await storage.save(run_record())
        raw(db_path, ("UPDATE flux_runs SET status = 'exploded'", ()))
        with pytest.raises(StorageCorruptedError, match=r"column runs\.status .*exploded"):
            await storage.load("run-1")
        assert await storage.list() == []  # skipped (and logged) by listings


async def test_a_value_that_is_not_json_fails_only_its_own_checkpoint(db_path: Path) -> None:
    async with SQLiteStorage(db_path) as storage:
        bad = storage.checkpoint(run_record("bad"), [step_record(0, output={"when": object()})])
        results = await asyncio.gather(
            storage.checkpoint(run_record("first"), [step_record(0)]),
            bad,
            storage.checkpoint(run_record("last"), [step_record(0)]),
            return_exceptions=True,
        )
        assert results[0] is None and results[2] is None
        assert isinstance(results[1], StorageError)
        assert "output of step 's0' (seq 0) of run bad" in str(results[1])
        assert sorted(r.id for r in await storage.list()) == ["first", "last"]


async def test_a_naive_datetime_is_refused() -> None:
    async with SQLiteStorage(":memory:") as storage:
        with pytest.raises(StorageError, match=r"naive datetime.*tzinfo=UTC"):
            await storage.save(run_record(updated_at=datetime(2030, 1, 1)))
        assert await storage.list() == []


async def test_a_held_write_lock_ends_in_a_clear_error_after_busy_timeout(db_path: Path) -> None:
    async with SQLiteStorage(db_path, busy_timeout=0.2) as storage:
        await storage.save(run_record())
        blocker = sqlite3.connect(db_path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StorageError, match=r"locked for more than 0\.2s.*busy_timeout="):
                await storage.checkpoint(run_record(status=RunStatus.COMPLETED))
            assert await storage.load("run-1") == run_record()  # reads are not blocked
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        await storage.checkpoint(run_record(status=RunStatus.COMPLETED))
        loaded = await storage.load("run-1")
        assert loaded is not None and loaded.status == "completed"


# --- group commit, one hop, indexes ------------------------------------------------------


def record_batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make SQLiteOps.write_checkpoints note each batch's size."""
    sizes: list[int] = []
    original: Callable[..., Any] = SQLiteOps.write_checkpoints

    def spy(self: SQLiteOps, conn: sqlite3.Connection, batch: Sequence[Any], wait: bool = True) -> Any:
        sizes.append(len(batch))
        return original(self, conn, batch, wait)

    monkeypatch.setattr(SQLiteOps, "write_checkpoints", spy)
    return sizes


async def test_concurrent_checkpoints_share_transactions(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes = record_batches(monkeypatch)
    async with SQLiteStorage(db_path) as storage:
        await asyncio.gather(*(storage.checkpoint(run_record(f"r{i}"), [step_record(0)]) for i in range(50)))
        assert len(await storage.list()) == 50
    assert sizes == [1, 49]  # the first goes at once; the others queue behind it, then go together


async def test_a_fenced_checkpoint_in_a_batch_fails_alone(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes = record_batches(monkeypatch)
    async with SQLiteStorage(db_path) as storage:
        for i in range(10):
            await storage.save(run_record(f"r{i}", owner="A"))
        sizes.clear()
        results = await asyncio.gather(
            *(
                storage.checkpoint(run_record(f"r{i}", owner="B" if i == 5 else "A"), [step_record(0)])
                for i in range(10)
            ),
            return_exceptions=True,
        )
        assert sizes == [1, 9]
        assert [type(r).__name__ for r in results].count("LeaseLostError") == 1
        assert isinstance(results[5], LeaseLostError)
        steps = {r.id: len(r.steps) for r in await storage.list()}
        assert steps == {f"r{i}": 0 if i == 5 else 1 for i in range(10)}


async def test_a_checkpoint_takes_the_thread_only_when_the_database_is_busy(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint is written on the event loop's thread (no hop to aiosqlite's). While
    another connection holds the write lock it goes through the thread, in one hop, and waits
    there: the loop goes on meanwhile (this test's own loop turns), and it commits once the
    lock is free."""
    hops: list[str] = []
    original: Callable[..., Any] = aiosqlite.Connection._execute

    async def counting(self: aiosqlite.Connection, fn: Callable[..., Any], *args: Any) -> Any:
        hops.append(getattr(fn, "__name__", "?"))
        return await original(self, fn, *args)

    async with SQLiteStorage(db_path) as storage:
        await storage.save(run_record(steps=tuple(step_record(i) for i in range(100))))
        monkeypatch.setattr(aiosqlite.Connection, "_execute", counting)
        await storage.checkpoint(run_record(updated_at=at(1)), [step_record(100), step_record(101)])
        assert hops == []
        blocker = sqlite3.connect(db_path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            writing = asyncio.ensure_future(
                storage.checkpoint(run_record(updated_at=at(2)), [step_record(102)])
            )
            for _ in range(10_000):  # until it waits on the thread; the loop is free meanwhile
                if hops:
                    break
                await asyncio.sleep(0)
            assert hops == ["write_checkpoints"]
            assert not writing.done()
        finally:
            blocker.execute("COMMIT")
            blocker.close()
        await writing
        monkeypatch.undo()
        loaded = await storage.load("run-1")
    assert loaded is not None and len(loaded.steps) == 103
    assert loaded.updated_at == at(2)


# --- a tick: only updated_at and the lease written -----------------------------------------


def ticked(run: RunRecord, seconds: float) -> RunRecord:
    """``run`` as the engine's next checkpoint makes it: only its times changed."""
    return checkpointed(run, at(seconds), at(seconds + 30), {})


async def test_a_tick_writes_the_times_and_stays_fenced(db_path: Path) -> None:
    async with SQLiteStorage(db_path) as a, SQLiteStorage(db_path) as b:
        run = run_record(owner="A", lease_expires_at=at(30))
        await a.checkpoint(run, [step_record(0, StepStatus.RUNNING)])
        run = ticked(run, 1)
        await a.checkpoint(run, [step_record(0), step_record(1, StepStatus.RUNNING)])
        assert await a.load("run-1") == attrs.evolve(
            run, steps=(step_record(0), step_record(1, StepStatus.RUNNING))
        )
        assert await b.claim("run-1", "B", at(100), now=at(40)) is not None
        with pytest.raises(LeaseLostError, match="owned by B"):
            await a.checkpoint(ticked(run, 2), [step_record(1), step_record(2, StepStatus.RUNNING)])
        loaded = await a.load("run-1")
        assert loaded is not None and loaded.owner == "B" and len(loaded.steps) == 2


async def test_a_run_taken_back_is_written_whole(db_path: Path) -> None:
    async with SQLiteStorage(db_path) as a, SQLiteStorage(db_path) as b:
        run = run_record(owner="A", lease_expires_at=at(30))
        await a.checkpoint(run)
        taken = await b.claim("run-1", "B", at(100), now=at(40))
        assert taken is not None
        await b.checkpoint(attrs.evolve(taken, fingerprint="fp-2", deadline_at=at(500)))
        await b.release("run-1", "B")
        assert await a.claim("run-1", "A", at(130), now=at(100)) is not None
        run = ticked(run, 101)
        await a.checkpoint(run)  # its fields are A's last ones: all of them written again
        assert await a.load("run-1") == run


async def test_a_failed_checkpoint_is_not_taken_for_written(db_path: Path) -> None:
    async with SQLiteStorage(db_path, busy_timeout=0.1) as storage:
        run = run_record(owner="A", lease_expires_at=at(30))
        await storage.checkpoint(run)
        changed = attrs.evolve(run, deadline_at=at(900))
        blocker = sqlite3.connect(db_path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StorageError, match="locked"):
                await storage.checkpoint(changed)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        run = ticked(changed, 2)
        await storage.checkpoint(run)  # built on the failed one: written whole
        assert await storage.load("run-1") == run


async def test_close_waits_for_queued_checkpoints(db_path: Path) -> None:
    storage = SQLiteStorage(db_path)
    await storage.init()
    writes = [storage.checkpoint(run_record(f"r{i}"), [step_record(0)]) for i in range(20)]
    await asyncio.gather(*writes, storage.close())
    async with SQLiteStorage(db_path) as reopened:
        assert len(await reopened.list()) == 20


@pytest.mark.parametrize(
    ("query", "params", "index"),
    [
        ("list", (False, 0), "flux_runs_created"),
        ("list", (True, 0), "flux_runs_workflow"),
        ("list", (False, 1), "flux_runs_status"),
        ("list", (True, 2), "flux_runs_workflow"),
        ("due", (), "flux_runs_wake"),
        ("next_wake", (), "flux_runs_wake"),
        ("renew", (), "flux_runs_owner"),
        ("steps_select", (), "PRIMARY KEY"),
    ],
)
async def test_queries_use_an_index(db_path: Path, query: str, params: tuple[Any, ...], index: str) -> None:
    async with SQLiteStorage(db_path):
        pass
    sql = Statements("flux_")
    text = sql.list_runs(*params) if query == "list" else sql.with_marks(query, 3)
    plan = " ".join(row[3] for row in raw(db_path, (f"EXPLAIN QUERY PLAN {text}", [None] * text.count("?"))))
    assert f"USING INDEX {index}" in plan or f"USING {index}" in plan
    assert "USE TEMP B-TREE" not in plan


# --- several processes ------------------------------------------------------------------


@pytest.mark.slow
def test_two_processes_write_one_file_at_once(db_path: Path) -> None:
    runs = 60  # 60 runs x (10 steps + 1) = 660 checkpoints per process, 60 runs in flight each
    procs = [
        subprocess.Popen(
            [sys.executable, str(WRITER), str(db_path), tag, str(runs)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in ("one", "two")
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
        for proc in procs:  # now both are open: let them go together
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outputs = [proc.communicate(timeout=120) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert "locked" not in err and out.split() == ["done", str(runs)]
    counts = raw(db_path, "SELECT status, COUNT(*) FROM flux_runs GROUP BY status")
    assert counts == [("completed", 2 * runs)]
    assert raw(db_path, "SELECT COUNT(*) FROM flux_steps WHERE status = 'completed'") == [(2 * runs * 10,)]
    assert raw(db_path, "PRAGMA integrity_check") == [("ok",)]
    spans = raw(db_path, "SELECT MIN(created_at), MAX(updated_at) FROM flux_runs GROUP BY substr(id, 1, 3)")
    assert max(start for start, _ in spans) < min(end for _, end in spans)  # they did overlap


def test_status_literals_in_the_sql_match_the_enum() -> None:
    """The SQL spells the finished and the waiting statuses out; they must match RunStatus."""
    sql = Statements("flux_")
    finished = {s.value for s in RunStatus if f"'{s.value}'" in sql["request_cancel"]}
    assert finished == {s.value for s in RunStatus if s.finished}
    assert {s.value for s in RunStatus if f"'{s.value}'" in sql["due"]} == {"pending", "suspended"}


async def test_without_a_path_the_database_is_private_and_in_memory() -> None:
    first, second = SQLiteStorage(), SQLiteStorage()
    async with first, second:
        engine = FluxEngine(first)
        result = await engine.execute(create_workflow("mem").step("a", lambda ctx: 1))
        assert (await first.load(result.id)) is not None
        assert await second.load(result.id) is None


async def test_delete_and_prune_leave_no_idempotency_keys_behind(tmp_path: Path) -> None:
    db_path = tmp_path / "flux.db"
    async with SQLiteStorage(db_path) as storage:
        for run_id in ("gone", "pruned", "kept"):
            await storage.create(run_record(run_id), key=run_id, key_expires_at=at(10_000))
            if run_id == "pruned":
                finished = attrs.evolve(run_record(run_id), status=RunStatus.COMPLETED, finished_at=at(1))
                await storage.save(finished)
        await storage.delete("gone")
        assert await storage.prune(older_than=at(5)) == 1
    assert raw(db_path, "SELECT run_id FROM flux_keys") == [("kept",)]
