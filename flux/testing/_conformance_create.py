"""The conformance suite, part three: creating runs, idempotency keys, duplicates, damage.

:class:`flux.testing.StorageConformance` inherits these tests; see its module for how to use it.
A backend that stores encoded rows overrides :meth:`CreateConformance.damage`.
"""

from __future__ import annotations

import asyncio

import attrs
import pytest

from flux.errors import InvalidRunStateError, StorageCorruptedError, UnknownSignalError
from flux.records import RunRecord
from flux.status import RunStatus
from flux.storage.protocol import Storage
from flux.testing._factories import at, run_record, step_record

LONE_SURROGATE = b"\xff".decode("utf-8", "surrogateescape")
"""A str that Python holds but UTF-8 cannot encode: some databases cannot store it."""


def _pending(run_id: str, created: float = 0.0) -> RunRecord:
    return run_record(run_id, status=RunStatus.PENDING, created=created, wake_at=at(created))


class CreateConformance:
    """Storage tests for creating runs and refusing duplicates (part of StorageConformance)."""

    pytestmark = [pytest.mark.asyncio]

    async def damage(self, storage: Storage, run_id: str) -> bool:
        """Make the stored row of ``run_id`` unreadable (a broken JSON column, say) as a bad
        disk or a hand edit would; return False if the backend keeps no encoded rows."""
        raise NotImplementedError(
            f"{type(self).__name__} must override damage(storage, run_id): break one encoded "
            "column of the run's row, or return False when the backend stores no encoded rows"
        )

    # --- create -----------------------------------------------------------------------------

    async def test_create_is_insert_only(self, storage: Storage) -> None:
        """Bad input: create() of an id that is stored. Refused; the stored run and its steps stay."""
        first = run_record(status=RunStatus.RUNNING, owner="A", steps=(step_record(0),))
        assert await storage.create(first) is None
        with pytest.raises(InvalidRunStateError):
            await storage.create(_pending("run-1", created=5))
        assert await storage.load("run-1") == first

    async def test_concurrent_creates_of_one_id_store_one_run(self, storage: Storage) -> None:
        """Race: five create() calls of one id at once. Exactly one stores it; four are refused."""
        runs = [attrs.evolve(_pending("run-1"), input={"n": n}) for n in range(5)]
        answers = await asyncio.gather(*(storage.create(run) for run in runs), return_exceptions=True)
        winners = [n for n, answer in enumerate(answers) if answer is None]
        assert len(winners) == 1
        assert all(isinstance(a, InvalidRunStateError) for a in answers if a is not None)
        loaded = await storage.load("run-1")
        assert loaded is not None and loaded.input == {"n": winners[0]}

    async def test_create_with_a_key_binds_it_until_expiry(self, storage: Storage) -> None:
        """A key bound to a stored run returns that run until it expires or the run is gone."""
        assert await storage.create(_pending("r1"), key="k", key_expires_at=at(100)) is None
        assert await storage.create(_pending("r2", 10), key="k", key_expires_at=at(100)) == "r1"
        assert await storage.load("r2") is None
        other = attrs.evolve(_pending("r3", 10), workflow="other-flow")
        assert await storage.create(other, key="k", key_expires_at=at(100)) is None
        assert await storage.create(_pending("r2", 100), key="k", key_expires_at=at(200)) is None  # expired
        assert await storage.create(_pending("r4", 150), key="k", key_expires_at=at(300)) == "r2"
        await storage.delete("r2")
        assert await storage.create(_pending("r4", 150), key="k", key_expires_at=at(300)) is None

    async def test_concurrent_creates_with_one_key_store_one_run(self, storage: Storage) -> None:
        """Race: five create() calls with one idempotency key at once. One run is stored, the
        others get its id, and nothing else is left behind (no tentative runs to clean up)."""
        answers = await asyncio.gather(
            *(storage.create(_pending(f"r{i}"), key="k", key_expires_at=at(100)) for i in range(5))
        )
        created = [f"r{i}" for i, answer in enumerate(answers) if answer is None]
        assert len(created) == 1
        assert {answer for answer in answers if answer is not None} == set(created)
        assert [run.id for run in await storage.list()] == created

    async def test_create_of_a_taken_id_binds_no_key(self, storage: Storage) -> None:
        """Bad input: a key given with a taken run id. Refused as a whole: the key stays free."""
        await storage.create(_pending("taken"))
        with pytest.raises(InvalidRunStateError):
            await storage.create(_pending("taken", 1), key="k", key_expires_at=at(100))
        assert await storage.create(_pending("fresh", 2), key="k", key_expires_at=at(100)) is None

    async def test_pruning_a_run_frees_its_idempotency_key(self, storage: Storage) -> None:
        """A pruned run takes its key binding with it: the key starts a new run afterwards."""
        assert await storage.create(_pending("old"), key="k", key_expires_at=at(10_000)) is None
        await storage.save(attrs.evolve(run_record("old"), status=RunStatus.COMPLETED, finished_at=at(1)))
        assert await storage.prune(older_than=at(5)) == 1
        assert await storage.create(_pending("new", 6), key="k", key_expires_at=at(10_000)) is None
        assert await storage.create(_pending("third", 7), key="k", key_expires_at=at(10_000)) == "new"

    # --- signals ----------------------------------------------------------------------------

    async def test_concurrent_duplicate_signals_store_one(self, storage: Storage) -> None:
        """Race: 20 add_signal(limit=1) calls for one wait at once. One is stored, 19 refused."""
        await storage.save(run_record(status=RunStatus.SUSPENDED))
        answers = await asyncio.gather(
            *(storage.add_signal("run-1", "go", n, at(1), limit=1) for n in range(20)),
            return_exceptions=True,
        )
        assert sum(1 for a in answers if isinstance(a, UnknownSignalError)) == 19
        assert len(await storage.list_signals("run-1")) == 1
        taken = await storage.take_signal("run-1", "go", 0)
        assert taken is not None
        assert await storage.add_signal("run-1", "go", "next", at(2), limit=1) is not None

    # --- faults -----------------------------------------------------------------------------

    async def test_an_unstorable_checkpoint_fails_alone_in_its_batch(self, storage: Storage) -> None:
        """Bad input: one of 30 concurrent checkpoints holds a lone surrogate (which SQLite
        cannot bind). The 29 others are stored whatever happens to that one."""
        for index in range(30):
            await storage.save(run_record(f"r{index}", owner="A"))

        def step(index: int) -> list[object]:
            value = LONE_SURROGATE if index == 13 else "ok"
            return [step_record(0, output=value)]

        await asyncio.gather(
            *(storage.checkpoint(run_record(f"r{i}", owner="A"), step(i)) for i in range(30)),  # type: ignore[arg-type]
            return_exceptions=True,
        )
        for index in range(30):
            if index != 13:
                loaded = await storage.load(f"r{index}")
                assert loaded is not None and [s.output for s in loaded.steps] == ["ok"]

    async def test_damaged_rows_are_skipped_by_listings(self, storage: Storage) -> None:
        """Bad input: a run row with a broken column. list, due and orphans skip it (and log
        it) and return the healthy runs; load of that run raises StorageCorruptedError."""
        await storage.save(_pending("due-ok"))
        await storage.save(_pending("due-bad"))
        await storage.save(run_record("orphan-ok", created=1))
        await storage.save(run_record("orphan-bad", created=1))
        damaged = await self.damage(storage, "due-bad") and await self.damage(storage, "orphan-bad")
        expect_listed = {"due-ok", "orphan-ok"} | (set() if damaged else {"due-bad", "orphan-bad"})
        assert {run.id for run in await storage.list()} == expect_listed
        assert {run.id for run in await storage.due(at(10), 10)} == expect_listed & {"due-ok", "due-bad"}
        orphans = {run.id for run in await storage.orphans(at(10), "nohost", 10)}
        assert orphans == expect_listed & {"orphan-ok", "orphan-bad"}
        if damaged:
            with pytest.raises(StorageCorruptedError):
                await storage.load("due-bad")
