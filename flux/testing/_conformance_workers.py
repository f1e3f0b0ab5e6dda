"""The conformance suite, part two: leases, signals, timers, orphans, cancellation, keys.

:class:`flux.testing.StorageConformance` inherits these tests; see its module for how to use it.
"""

from __future__ import annotations

import attrs
import pytest

from flux.status import RunStatus
from flux.storage.protocol import Storage
from flux.testing._factories import at, run_record, step_record


class WorkerConformance:
    """Storage tests for what workers and long waits need (part of StorageConformance)."""

    pytestmark = [pytest.mark.asyncio]

    # --- claim, renew, release --------------------------------------------------------------

    async def test_claim_takes_a_free_run_with_its_steps(self, storage: Storage) -> None:
        """A run without owner is claimed; the claim returns it with its step records."""
        await storage.save(run_record(steps=(step_record(0),)))
        claimed = await storage.claim("run-1", "B", at(60), now=at(10))
        assert claimed is not None
        assert (claimed.owner, claimed.lease_expires_at, claimed.steps) == ("B", at(60), (step_record(0),))
        assert await storage.load("run-1") == claimed

    async def test_claim_is_refused_while_another_lease_lives(self, storage: Storage) -> None:
        """A live lease of another owner wins; at ``now == lease`` the lease still lives."""
        await storage.save(run_record(owner="A", lease_expires_at=at(30)))
        assert await storage.claim("run-1", "B", at(90), now=at(10)) is None
        assert await storage.claim("run-1", "B", at(90), now=at(30)) is None
        loaded = await storage.load("run-1")
        assert loaded is not None and (loaded.owner, loaded.lease_expires_at) == ("A", at(30))

    async def test_claim_succeeds_after_expiry_for_the_owner_or_on_takeover(self, storage: Storage) -> None:
        """Expired leases, the same owner, a named dead owner and a missing lease all yield."""
        await storage.save(run_record("expired", owner="A", lease_expires_at=at(30)))
        await storage.save(run_record("mine", owner="B", lease_expires_at=at(30)))
        await storage.save(run_record("dead", owner="A", lease_expires_at=at(30)))
        await storage.save(run_record("no-lease", owner="A", status=RunStatus.SUSPENDED))
        assert await storage.claim("expired", "B", at(90), now=at(31)) is not None
        assert await storage.claim("mine", "B", at(90), now=at(10)) is not None
        assert await storage.claim("dead", "B", at(90), now=at(10), takeover="C") is None
        assert await storage.claim("dead", "B", at(90), now=at(10), takeover="A") is not None
        assert await storage.claim("no-lease", "B", at(90), now=at(10)) is not None
        owners = {r.id: (r.owner, r.lease_expires_at) for r in await storage.list()}
        assert set(owners.values()) == {("B", at(90))}

    async def test_claim_of_an_unknown_run_is_none(self, storage: Storage) -> None:
        """Nothing to claim, nothing created."""
        assert await storage.claim("ghost", "B", at(90), now=at(0)) is None
        assert await storage.load("ghost") is None

    async def test_renew_extends_only_the_owners_leases(self, storage: Storage) -> None:
        """``renew`` touches the given runs the owner holds with a lease, and counts them;
        a run the owner holds but does not name (nothing drives it) keeps its old lease."""
        await storage.save(run_record("a1", owner="A", lease_expires_at=at(30)))
        await storage.save(run_record("a2", owner="A", lease_expires_at=at(20)))
        await storage.save(run_record("a-undriven", owner="A", lease_expires_at=at(20)))
        await storage.save(run_record("a-waiting", owner="A", status=RunStatus.SUSPENDED))
        await storage.save(run_record("b1", owner="B", lease_expires_at=at(30)))
        named = ["a1", "a2", "a-waiting", "b1", "unknown", "a1"]
        assert await storage.renew("A", at(99), named) == 2
        leases = {r.id: r.lease_expires_at for r in await storage.list()}
        assert leases == {"a1": at(99), "a2": at(99), "a-undriven": at(20), "a-waiting": None, "b1": at(30)}
        assert await storage.renew("nobody", at(99), ["b1"]) == 0
        assert await storage.renew("A", at(99), []) == 0

    async def test_release_drops_only_the_owners_claim(self, storage: Storage) -> None:
        """A non-owner's release is a no-op; the owner's clears owner and lease."""
        await storage.save(run_record(owner="A", lease_expires_at=at(30)))
        await storage.release("run-1", "B")
        await storage.release("ghost", "A")
        loaded = await storage.load("run-1")
        assert loaded is not None and loaded.owner == "A"
        await storage.release("run-1", "A")
        loaded = await storage.load("run-1")
        assert loaded is not None and (loaded.owner, loaded.lease_expires_at) == (None, None)

    # --- signals ----------------------------------------------------------------------------

    async def test_add_signal_needs_an_unfinished_run(self, storage: Storage) -> None:
        """Signals for unknown or finished runs are not stored."""
        await storage.save(run_record("done", status=RunStatus.COMPLETED))
        assert await storage.add_signal("ghost", "go", 1, at(1)) is None
        assert await storage.add_signal("done", "go", 1, at(1)) is None
        assert await storage.list_signals("done") == []

    async def test_add_signal_wakes_a_suspended_run(self, storage: Storage) -> None:
        """A suspended run becomes due at the signal's time; a running one is left alone."""
        await storage.save(run_record("waiting", status=RunStatus.SUSPENDED, wake_at=at(500)))
        await storage.save(run_record("busy", status=RunStatus.RUNNING))
        signal = await storage.add_signal("waiting", "go", {"ok": True}, at(7))
        assert signal is not None
        fields = (signal.run_id, signal.name, signal.payload, signal.created_at)
        assert fields == ("waiting", "go", {"ok": True}, at(7))
        assert signal.consumed_by is None
        assert await storage.add_signal("busy", "go", None, at(8)) is not None
        woken, busy = await storage.load("waiting"), await storage.load("busy")
        assert woken is not None and woken.wake_at == at(7)
        assert busy is not None and busy.wake_at is None

    async def test_take_signal_takes_the_oldest_once_per_visit(self, storage: Storage) -> None:
        """Signals are taken oldest first; taking again for the same visit returns the same one."""
        await storage.save(run_record(status=RunStatus.SUSPENDED))
        first = await storage.add_signal("run-1", "go", 1, at(1))
        second = await storage.add_signal("run-1", "go", 2, at(2))
        await storage.add_signal("run-1", "other", 3, at(3))
        assert first is not None and second is not None and first.id != second.id
        taken = await storage.take_signal("run-1", "go", 4)
        assert taken == attrs.evolve(first, consumed_by=4)
        assert await storage.take_signal("run-1", "go", 4) == taken
        assert await storage.take_signal("run-1", "go", 5) == attrs.evolve(second, consumed_by=5)
        assert await storage.take_signal("run-1", "go", 6) is None
        listed = await storage.list_signals("run-1")
        taken_by = [(s.name, s.payload, s.consumed_by) for s in listed]
        assert taken_by == [("go", 1, 4), ("go", 2, 5), ("other", 3, None)]

    async def test_signal_payloads_are_copies(self, storage: Storage) -> None:
        """Mutating a payload given to or returned by storage changes nothing stored."""
        await storage.save(run_record())
        payload = {"items": [1]}
        returned = await storage.add_signal("run-1", "go", payload, at(1))
        payload["items"].append(2)
        assert returned is not None
        returned.payload["items"].append(3)
        taken = await storage.take_signal("run-1", "go", 0)
        assert taken is not None and taken.payload == {"items": [1]}
        taken.payload["items"].append(4)
        assert [s.payload for s in await storage.list_signals("run-1")] == [{"items": [1]}]

    # --- timers and orphans -----------------------------------------------------------------

    async def test_due_lists_waiting_runs_whose_time_came(self, storage: Storage) -> None:
        """Pending and suspended runs with wake_at <= now, earliest first, without steps."""
        specs = [
            ("pending-10", RunStatus.PENDING, at(10)),
            ("suspended-5", RunStatus.SUSPENDED, at(5)),
            ("suspended-20", RunStatus.SUSPENDED, at(20)),
            ("suspended-50", RunStatus.SUSPENDED, at(50)),
            ("running-1", RunStatus.RUNNING, at(1)),
            ("done-1", RunStatus.COMPLETED, at(1)),
            ("suspended-never", RunStatus.SUSPENDED, None),
        ]
        for run_id, status, wake in specs:
            await storage.save(run_record(run_id, status=status, wake_at=wake, steps=(step_record(0),)))
        due = await storage.due(at(20), 10)
        assert [r.id for r in due] == ["suspended-5", "pending-10", "suspended-20"]
        assert all(r.steps == () for r in due)
        assert [r.id for r in await storage.due(at(20), 1)] == ["suspended-5"]
        assert await storage.due(at(4), 10) == []
        assert await storage.next_wake() == at(5)

    async def test_next_wake_is_none_without_waiting_runs(self, storage: Storage) -> None:
        """Runs that are not waiting never count."""
        await storage.save(run_record("running", status=RunStatus.RUNNING, wake_at=at(1)))
        assert await storage.next_wake() is None

    async def test_orphans_are_in_flight_runs_without_a_live_driver(self, storage: Storage) -> None:
        """No owner, no lease, an expired lease, or an owner on this host: an orphan."""
        specs = [
            ("no-owner", RunStatus.RUNNING, None, None),
            ("no-lease", RunStatus.RUNNING, "far/1/1/x", None),
            ("expired", RunStatus.ROLLING_BACK, "far/1/1/x", at(5)),
            ("live-far", RunStatus.RUNNING, "far/1/1/x", at(100)),
            ("live-here", RunStatus.ROLLING_BACK, "here/7/1/x", at(100)),
            ("lookalike", RunStatus.RUNNING, "here-too/7/1/x", at(100)),
            ("waiting", RunStatus.SUSPENDED, None, None),
            ("done", RunStatus.COMPLETED, None, None),
        ]
        for run_id, status, owner, lease in specs:
            await storage.save(run_record(run_id, status=status, owner=owner, lease_expires_at=lease))
        found = await storage.orphans(at(10), "here", 10)
        assert sorted(r.id for r in found) == ["expired", "live-here", "no-lease", "no-owner"]
        assert len(await storage.orphans(at(10), "here", 2)) == 2

    # --- cancellation and idempotency keys --------------------------------------------------

    async def test_request_cancel_marks_unfinished_runs_for_their_owner(self, storage: Storage) -> None:
        """A request is stored on unfinished runs and listed for the owner that holds them."""
        await storage.save(run_record("mine", owner="A", lease_expires_at=at(30)))
        await storage.save(run_record("theirs", owner="B", lease_expires_at=at(30)))
        await storage.save(run_record("done", owner="A", status=RunStatus.COMPLETED))
        request = {"reason": "user asked", "compensate": True}
        assert await storage.request_cancel("ghost", request) is False
        assert await storage.request_cancel("done", request) is False
        assert await storage.request_cancel("mine", request) is True
        assert await storage.request_cancel("theirs", request) is True
        request["reason"] = "mutated"
        wanted = await storage.cancel_requests("A")
        assert [(r.id, r.cancel_requested) for r in wanted] == [
            ("mine", {"reason": "user asked", "compensate": True})
        ]
        assert await storage.cancel_requests("nobody") == []
