"""The storage conformance suite: what every backend of ``flux.storage.Storage`` must do.

Subclass :class:`StorageConformance` in a test module and give it a ``storage`` fixture that
yields an opened, empty backend; pytest collects the inherited tests::

    import pytest
    from flux.testing import StorageConformance

    class TestMyStorage(StorageConformance):
        @pytest.fixture
        async def storage(self):
            store = MyStorage(...)
            await store.init()
            yield store
            await store.close()

        async def damage(self, storage, run_id):
            ...  # break one encoded column of the run's row (False: no encoded rows)

The tests are ``async``: run them with pytest-asyncio (``asyncio_mode = "auto"``, or decorate
the fixture with ``@pytest_asyncio.fixture`` in strict mode).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import attrs
import pytest

from flux.errors import LeaseLostError
from flux.records import LogLine, RunFilter
from flux.status import RunStatus, StepStatus
from flux.storage.protocol import Storage
from flux.testing._conformance_create import CreateConformance
from flux.testing._conformance_workers import WorkerConformance
from flux.testing._factories import NESTED, UNICODE, at, full_run, run_record, step_record


class StorageConformance(WorkerConformance, CreateConformance):
    """The storage contract as tests: subclass it and provide a ``storage`` fixture."""

    pytestmark = [pytest.mark.asyncio]

    # --- lifecycle and round trips ----------------------------------------------------------

    async def test_init_and_close_are_safe_twice(self, storage: Storage) -> None:
        """``init`` twice keeps the data; ``close`` twice raises nothing."""
        await storage.save(run_record())
        await storage.init()
        assert await storage.load("run-1") is not None
        await storage.close()
        await storage.close()

    async def test_load_of_an_unknown_run_is_none(self, storage: Storage) -> None:
        """An id never stored loads as None."""
        assert await storage.load("nope") is None

    async def test_every_field_round_trips(self, storage: Storage) -> None:
        """Every field of a run and of its step records comes back equal, in list too."""
        run = full_run()
        await storage.save(run)
        assert await storage.load(run.id) == run
        assert await storage.list() == [run]

    async def test_step_logs_round_trip_and_grow_by_checkpoint(self, storage: Storage) -> None:
        """A visit's log lines (level, time, message) are kept in order; a checkpoint that
        rewrites the record with more lines replaces them, one without lines clears them."""
        first = LogLine(level="info", time=at(1), message="charging " + UNICODE)
        second = LogLine(level="warning", time=at(2.000001), message="x" * 3000)
        step = step_record(0, StepStatus.RUNNING, logs=(first,))
        await storage.save(run_record(steps=(step,)))
        await storage.checkpoint(run_record(), [attrs.evolve(step, logs=(first, second))])
        loaded = await storage.load("run-1")
        assert loaded is not None and loaded.steps[0].logs == (first, second)
        await storage.checkpoint(run_record(), [attrs.evolve(step, logs=())])
        loaded = await storage.load("run-1")
        assert loaded is not None and loaded.steps[0].logs == ()

    @pytest.mark.parametrize(
        "value",
        [None, True, False, 0, -1, 2**63 + 1, 1.5, -0.25, 1e300, "", UNICODE, [], {}, NESTED, [[[]]]],
    )
    async def test_json_values_round_trip(self, storage: Storage, value: Any) -> None:
        """Any JSON value survives as an input, an output, a data value and an action."""
        step = step_record(0, output=value, data_set={"v": value}, actions={"a": value})
        await storage.save(run_record(input=value, steps=(step,)))
        loaded = await storage.load("run-1")
        assert loaded is not None
        assert loaded.input == value
        assert (loaded.steps[0].output, loaded.steps[0].data_set, loaded.steps[0].actions) == (
            value, {"v": value}, {"a": value},
        )  # fmt: skip

    async def test_large_values_round_trip(self, storage: Storage) -> None:
        """A ~1 MB input and a big step output are stored whole."""
        big_text = "x" * 1_000_000 + UNICODE
        big_list = [{"i": i, "name": f"item-{i}", "tags": ["a", "b"]} for i in range(20_000)]
        await storage.save(run_record(input={"blob": big_text}))
        await storage.checkpoint(run_record(input={"blob": big_text}), [step_record(0, output=big_list)])
        loaded = await storage.load("run-1")
        assert loaded is not None
        assert loaded.input == {"blob": big_text}
        assert loaded.steps[0].output == big_list

    async def test_datetimes_round_trip_timezone_aware(self, storage: Storage) -> None:
        """Datetimes keep their microseconds, come back timezone-aware and equal."""
        india = timezone(timedelta(hours=5, minutes=30))
        times = [
            datetime(1, 1, 1, tzinfo=UTC),
            datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
            datetime(2030, 6, 1, 12, 0, 0, 1, tzinfo=india),
        ]
        for index, moment in enumerate(times):
            run = run_record(f"r{index}", created=0, updated_at=moment, finished_at=moment, wake_at=moment)
            await storage.save(attrs.evolve(run, steps=(step_record(0, started_at=moment),)))
            loaded = await storage.load(f"r{index}")
            assert loaded is not None
            assert (loaded.updated_at, loaded.finished_at, loaded.wake_at) == (moment, moment, moment)
            assert loaded.steps[0].started_at == moment
            assert loaded.updated_at.utcoffset() is not None

    # --- copies, not live objects -----------------------------------------------------------

    async def test_saved_records_are_copied(self, storage: Storage) -> None:
        """Mutating a record's dicts after ``save`` or ``checkpoint`` changes nothing stored."""
        data: dict[str, Any] = {"items": [1]}
        step = step_record(0, output={"out": [1]}, data_set={"d": [1]}, actions={"a": [1]})
        await storage.save(run_record(input=data, steps=(step,)))
        data["items"].append(2)
        step.output["out"].append(2)
        step.data_set["d"].append(2)
        step.actions["a"].append(2)
        saved = await storage.load("run-1")
        assert saved is not None and saved.input == {"items": [1]}
        assert saved.steps[0] == step_record(0, output={"out": [1]}, data_set={"d": [1]}, actions={"a": [1]})
        new_input: dict[str, Any] = {"items": [5]}
        new_step = step_record(1, output={"out": [1]})
        await storage.checkpoint(run_record(input=new_input), [new_step])
        new_input["items"].append(6)
        new_step.output["out"].append(2)
        loaded = await storage.load("run-1")
        assert loaded is not None and loaded.input == {"items": [5]}
        assert loaded.steps[1].output == {"out": [1]}

    async def test_loaded_records_are_copies(self, storage: Storage) -> None:
        """Mutating what ``load`` or ``list`` returned changes nothing stored."""
        run = full_run()
        await storage.save(run)
        for loaded in [await storage.load(run.id), (await storage.list())[0]]:
            assert loaded is not None
            loaded.input["order"]["a"].append("mutated")
            loaded.steps[0].output["a"].clear()
            loaded.steps[0].data_set["k"]["new"] = 1
            loaded.steps[0].actions["pay"]["id"] = "changed"
            assert loaded.cancel_requested is not None
            loaded.cancel_requested["reason"] = "changed"  # type: ignore[index]
        assert await storage.load(run.id) == run

    # --- save, list, delete -----------------------------------------------------------------

    async def test_save_replaces_a_run_but_keeps_created_at(self, storage: Storage) -> None:
        """A second ``save`` replaces fields and step records; ``created_at`` stays."""
        await storage.save(run_record(created=0, steps=(step_record(0), step_record(1), step_record(2))))
        again = run_record(
            created=99, status=RunStatus.COMPLETED, updated_at=at(100), steps=(step_record(0),)
        )
        await storage.save(again)
        loaded = await storage.load("run-1")
        assert loaded == attrs.evolve(again, created_at=at(0))

    async def test_list_is_newest_first_with_ties_in_insertion_order(self, storage: Storage) -> None:
        """``list`` orders by created_at descending, then the later stored first."""
        for run_id, created in [("c", 10), ("a", 30), ("b1", 20), ("b2", 20)]:
            await storage.save(run_record(run_id, created=created))
        await storage.save(run_record("b1", created=20, status=RunStatus.COMPLETED))  # an update
        assert [r.id for r in await storage.list()] == ["a", "b2", "b1", "c"]

    async def test_list_filters_by_workflow_and_status(self, storage: Storage) -> None:
        """Workflow and status (one or several) filter; None fields do not."""
        specs = [("r1", "x", RunStatus.RUNNING), ("r2", "y", RunStatus.COMPLETED),
                 ("r3", "x", RunStatus.FAILED), ("r4", "x", RunStatus.COMPLETED)]  # fmt: skip
        for index, (run_id, workflow, status) in enumerate(specs):
            await storage.save(run_record(run_id, workflow=workflow, status=status, created=index))

        async def ids(**fields: Any) -> list[str]:
            return [r.id for r in await storage.list(RunFilter(**fields))]

        assert await ids() == ["r4", "r3", "r2", "r1"]
        assert await ids(workflow="x") == ["r4", "r3", "r1"]
        assert await ids(status="completed") == ["r4", "r2"]
        assert await ids(status=["failed", RunStatus.RUNNING]) == ["r3", "r1"]
        assert await ids(workflow="x", status=["completed", "failed"]) == ["r4", "r3"]
        assert await ids(workflow="nope") == []
        assert await ids(status=[]) == []

    async def test_list_limit_and_offset(self, storage: Storage) -> None:
        """``offset`` skips the newest runs, ``limit`` caps the count; each works alone."""
        for index in range(5):
            await storage.save(run_record(f"r{index}", created=index))

        async def ids(**fields: Any) -> list[str]:
            return [r.id for r in await storage.list(RunFilter(**fields))]

        assert await ids(limit=2) == ["r4", "r3"]
        assert await ids(limit=2, offset=1) == ["r3", "r2"]
        assert await ids(offset=3) == ["r1", "r0"]
        assert await ids(limit=0) == []
        assert await ids(offset=10) == []
        assert await ids(limit=10, offset=4) == ["r0"]

    async def test_list_returns_step_records(self, storage: Storage) -> None:
        """Listed runs carry their step records in seq order."""
        await storage.save(run_record("a", steps=(step_record(0), step_record(1))))
        await storage.save(run_record("b", created=1, steps=(step_record(0, StepStatus.RUNNING),)))
        listed = {r.id: [(s.seq, s.status) for s in r.steps] for r in await storage.list()}
        assert listed == {"a": [(0, "completed"), (1, "completed")], "b": [(0, "running")]}

    async def test_delete_removes_a_run_and_its_records(self, storage: Storage) -> None:
        """``delete`` answers whether a run existed; a new run with its id starts clean."""
        await storage.save(run_record("gone", steps=(step_record(0), step_record(1))))
        await storage.save(run_record("kept", steps=(step_record(0),)))
        await storage.add_signal("gone", "go", None, at(1))
        assert await storage.delete("gone") is True
        assert await storage.delete("gone") is False
        assert await storage.load("gone") is None
        assert await storage.list_signals("gone") == []
        assert [r.id for r in await storage.list()] == ["kept"]
        await storage.checkpoint(run_record("gone"))
        reborn = await storage.load("gone")
        assert reborn is not None and reborn.steps == ()

    # --- checkpoint -------------------------------------------------------------------------

    async def test_checkpoint_creates_an_unknown_run(self, storage: Storage) -> None:
        """A checkpoint of a new run stores its fields and the given step records."""
        run = run_record(input={"n": 1}, owner="me", lease_expires_at=at(30))
        await storage.checkpoint(run, [step_record(0, StepStatus.RUNNING)])
        assert await storage.load("run-1") == attrs.evolve(run, steps=(step_record(0, StepStatus.RUNNING),))

    async def test_checkpoint_writes_fields_and_upserts_only_given_steps(self, storage: Storage) -> None:
        """Fields change, given steps are upserted by seq, other steps and created_at stay."""
        await storage.save(run_record(steps=tuple(step_record(i) for i in range(5))))
        changed = run_record(
            created=77, status=RunStatus.COMPLETED, updated_at=at(8), finished_at=at(8), input={"x": 1},
            wake_at=at(9), steps=(step_record(0, StepStatus.FAILED),),  # run.steps are not written
        )  # fmt: skip
        await storage.checkpoint(changed, [step_record(2, output="new"), step_record(5, StepStatus.RUNNING)])
        loaded = await storage.load("run-1")
        expected = [step_record(0), step_record(1), step_record(2, output="new"), step_record(3),
                    step_record(4), step_record(5, StepStatus.RUNNING)]  # fmt: skip
        assert loaded == attrs.evolve(changed, created_at=at(0), steps=tuple(expected))

    async def test_checkpoint_keeps_a_requested_cancellation(self, storage: Storage) -> None:
        """Only ``request_cancel`` sets ``cancel_requested``; a checkpoint keeps it."""
        await storage.save(run_record(owner="me"))
        assert await storage.request_cancel("run-1", {"reason": "stop", "compensate": False}) is True
        await storage.checkpoint(run_record(owner="me", cancel_requested=None, updated_at=at(5)))
        loaded = await storage.load("run-1")
        assert loaded is not None
        assert loaded.cancel_requested == {"reason": "stop", "compensate": False}
        assert loaded.updated_at == at(5)

    async def test_checkpoint_is_fenced_by_the_owner(self, storage: Storage) -> None:
        """A checkpoint by a non-owner raises LeaseLostError and writes nothing."""
        stored = run_record(owner="A", lease_expires_at=at(30), steps=(step_record(0, StepStatus.RUNNING),))
        await storage.save(stored)
        stale = run_record(owner="B", status=RunStatus.COMPLETED, updated_at=at(9))
        with pytest.raises(LeaseLostError) as caught:
            await storage.checkpoint(stale, [step_record(0), step_record(1)])
        assert caught.value.run_id == "run-1"
        assert await storage.load("run-1") == stored
        await storage.checkpoint(attrs.evolve(stale, owner="A"), [step_record(0)])
        loaded = await storage.load("run-1")
        assert loaded is not None and loaded.status == "completed" and loaded.steps == (step_record(0),)

    async def test_checkpoint_without_owner_is_not_fenced(self, storage: Storage) -> None:
        """A checkpoint whose run has no owner is written whoever holds the run."""
        await storage.save(run_record(owner="A", lease_expires_at=at(30)))
        await storage.checkpoint(run_record(status=RunStatus.COMPLETED), [step_record(0)])
        loaded = await storage.load("run-1")
        assert loaded is not None and loaded.status == "completed" and loaded.owner is None

    async def test_checkpoint_of_a_released_run_is_fenced(self, storage: Storage) -> None:
        """Once the stored run has no owner, a checkpoint naming an owner is refused."""
        await storage.save(run_record(owner="A", lease_expires_at=at(30)))
        await storage.release("run-1", "A")
        with pytest.raises(LeaseLostError):
            await storage.checkpoint(run_record(owner="A"), [step_record(0)])
        loaded = await storage.load("run-1")
        assert loaded is not None and loaded.steps == ()

    async def test_lease_lost_fails_only_its_own_concurrent_checkpoint(self, storage: Storage) -> None:
        """Among concurrent checkpoints, only the fenced one fails; the others are stored."""
        for index in range(20):
            await storage.save(run_record(f"r{index}", owner="A"))
        results = await asyncio.gather(
            *(
                storage.checkpoint(run_record(f"r{i}", owner="B" if i == 7 else "A"), [step_record(0)])
                for i in range(20)
            ),
            return_exceptions=True,
        )
        assert [i for i, r in enumerate(results) if isinstance(r, LeaseLostError)] == [7]
        assert all(r is None for i, r in enumerate(results) if i != 7)
        loaded = {r.id: r.steps for r in await storage.list()}
        assert loaded.pop("r7") == ()
        assert all(steps == (step_record(0),) for steps in loaded.values())

    async def test_concurrent_checkpoints_from_many_tasks_all_land(self, storage: Storage) -> None:
        """50 tasks x 20 checkpoints each: every step record and the last run fields are stored."""

        async def drive(task: int) -> None:
            for seq in range(20):
                run = run_record(f"t{task}", owner="me", updated_at=at(seq), input={"task": task})
                await storage.checkpoint(run, [step_record(seq, output={"task": task, "seq": seq})])

        await asyncio.gather(*(drive(task) for task in range(50)))
        runs = await storage.list()
        assert len(runs) == 50
        for run in runs:
            task = run.input["task"]
            assert run.updated_at == at(19)
            assert [s.output for s in run.steps] == [{"task": task, "seq": seq} for seq in range(20)]

    # --- prune ------------------------------------------------------------------------------

    async def test_prune_deletes_finished_runs_older_than_a_time(self, storage: Storage) -> None:
        """Finished runs finished (or, without finished_at, updated) before the cut go."""
        specs = [
            ("old-done", RunStatus.COMPLETED, at(10), at(10)),
            ("old-failed", RunStatus.FAILED, at(20), at(20)),
            ("old-cancelled", RunStatus.CANCELLED, None, at(5)),
            ("new-done", RunStatus.COMPLETED, at(100), at(100)),
            ("old-running", RunStatus.RUNNING, None, at(0)),
            ("old-suspended", RunStatus.SUSPENDED, None, at(0)),
        ]
        for run_id, status, finished, updated in specs:
            await storage.save(
                run_record(run_id, status=status, finished_at=finished, updated_at=updated,
                           steps=(step_record(0),))
            )  # fmt: skip
        assert await storage.prune(older_than=at(50)) == 3
        assert sorted(r.id for r in await storage.list()) == ["new-done", "old-running", "old-suspended"]
        assert await storage.load("old-done") is None

    async def test_prune_by_status(self, storage: Storage) -> None:
        """``status`` narrows prune to some finished statuses; unfinished ones are refused."""
        await storage.save(run_record("done", status=RunStatus.COMPLETED, finished_at=at(1)))
        await storage.save(run_record("failed", status=RunStatus.FAILED, finished_at=at(1)))
        assert await storage.prune(older_than=at(50), status=["failed"]) == 1
        assert [r.id for r in await storage.list()] == ["done"]
        with pytest.raises(ValueError, match="running"):
            await storage.prune(older_than=at(50), status=["running"])
        assert await storage.prune(older_than=at(0)) == 0

    # =======================================================================================
    # Waiting and workers under concurrency (signals, keys, claims, cancellation, pruning).
    # Kept together at the end: these are what several workers sharing one store rely on.
    # =======================================================================================

    async def test_concurrent_claims_of_one_run_have_one_winner(self, storage: Storage) -> None:
        """Ten owners claiming one free run at once: exactly one gets it."""
        await storage.save(run_record(status=RunStatus.PENDING, wake_at=at(0)))
        claims = await asyncio.gather(
            *(storage.claim("run-1", f"owner-{i}", at(60), now=at(1)) for i in range(10))
        )
        winners = [claim.owner for claim in claims if claim is not None]
        assert len(winners) == 1
        loaded = await storage.load("run-1")
        assert loaded is not None and loaded.owner == winners[0]

    async def test_concurrent_takes_for_two_visits_get_different_signals(self, storage: Storage) -> None:
        """Two visits taking the same signal name at once never share one signal."""
        await storage.save(run_record(status=RunStatus.SUSPENDED))
        await storage.add_signal("run-1", "tick", 1, at(1))
        await storage.add_signal("run-1", "tick", 2, at(2))
        first, second = await asyncio.gather(
            storage.take_signal("run-1", "tick", 0), storage.take_signal("run-1", "tick", 1)
        )
        assert first is not None and second is not None
        assert {first.payload, second.payload} == {1, 2}
        assert first.id != second.id

    async def test_a_finished_run_leaves_the_cancel_requests(self, storage: Storage) -> None:
        """A run that ends after a request was made is no longer listed for its owner."""
        await storage.save(run_record(owner="A", lease_expires_at=at(30)))
        assert await storage.request_cancel("run-1", {"reason": "stop", "compensate": False})
        finished = run_record(owner="A", status=RunStatus.CANCELLED, finished_at=at(5), updated_at=at(5))
        await storage.checkpoint(finished)
        assert await storage.cancel_requests("A") == []
        assert await storage.request_cancel("run-1", {"reason": "again", "compensate": False}) is False

    async def test_a_checkpoint_that_clears_wake_at_leaves_the_due_list(self, storage: Storage) -> None:
        """A resumed run (wake_at cleared, status running) is neither due nor next to wake."""
        await storage.save(run_record(status=RunStatus.SUSPENDED, wake_at=at(5)))
        assert [r.id for r in await storage.due(at(10), 10)] == ["run-1"]
        await storage.checkpoint(run_record(status=RunStatus.RUNNING, wake_at=None, updated_at=at(10)))
        assert await storage.due(at(10), 10) == []
        assert await storage.next_wake() is None

    async def test_prune_removes_the_signals_of_pruned_runs(self, storage: Storage) -> None:
        """Signals go with their run when it is pruned."""
        await storage.save(run_record("old", status=RunStatus.SUSPENDED))
        await storage.add_signal("old", "go", {"n": 1}, at(1))
        await storage.save(run_record("old", status=RunStatus.COMPLETED, finished_at=at(2)))
        assert await storage.prune(older_than=at(50)) == 1
        assert await storage.list_signals("old") == []

    # --- labels -----------------------------------------------------------------------------

    async def test_labels_are_set_once_and_filter_list(self, storage: Storage) -> None:
        """Labels are stored with a run (by save or a first checkpoint), kept by later
        checkpoints, and ``list`` keeps the runs that carry every label asked for."""
        await storage.save(run_record("a", labels={"tenant": "acme", "tier": "gold"}))
        await storage.checkpoint(run_record("b", labels={"tenant": "acme"}, created=1))
        await storage.save(run_record("c", labels={"tenant": "other"}, created=2))
        await storage.save(run_record("d", created=3))
        await storage.checkpoint(run_record("a", status=RunStatus.COMPLETED, labels={"tenant": "x"}))

        loaded = await storage.load("a")
        assert loaded is not None
        assert loaded.status == RunStatus.COMPLETED
        assert dict(loaded.labels) == {"tenant": "acme", "tier": "gold"}

        async def ids(**labels: str) -> list[str]:
            return [run.id for run in await storage.list(RunFilter(labels=labels))]

        assert await ids(tenant="acme") == ["b", "a"]
        assert await ids(tenant="acme", tier="gold") == ["a"]
        assert await ids(tenant="nobody") == []
        assert await ids() == ["d", "c", "b", "a"]
        both = RunFilter(labels={"tenant": "acme"}, status=RunStatus.COMPLETED, workflow="flow", limit=5)
        assert [run.id for run in await storage.list(both)] == ["a"]

    async def test_create_stores_labels(self, storage: Storage) -> None:
        """A run created insert-only keeps its labels like a saved one."""
        await storage.create(run_record(labels={"tenant": "acme"}))
        [found] = await storage.list(RunFilter(labels={"tenant": "acme"}))
        assert dict(found.labels) == {"tenant": "acme"}

    async def test_labels_of_a_loaded_run_are_read_only_copies(self, storage: Storage) -> None:
        """Changing the dict a run was saved with changes nothing stored."""
        labels = {"tenant": "acme"}
        await storage.save(run_record(labels=labels))
        labels["tenant"] = "changed"
        loaded = await storage.load("run-1")
        assert loaded is not None and dict(loaded.labels) == {"tenant": "acme"}
        with pytest.raises(TypeError):
            loaded.labels["tenant"] = "x"  # type: ignore[index]
