"""The storage protocol every backend implements.

Storage knows runs and step records, never step code. Loads return copies: changing a loaded
record never changes what is stored. ``flux.testing.StorageConformance`` checks a backend
against this contract.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

from flux.records import JSON, RunFilter, RunRecord, SignalRecord, StepRecord
from flux.status import RunStatus


@runtime_checkable
class Storage(Protocol):
    """Where runs are kept.

    Writes are atomic per call. ``checkpoint`` is the hot path: it writes the run's own fields
    and the given step records in one transaction, costing O(size of those records).
    """

    async def init(self) -> None:
        """Prepare the backend (create tables, run migrations). Safe to call twice."""
        ...

    async def close(self) -> None:
        """Release connections. Safe to call twice."""
        ...

    async def save(self, run: RunRecord) -> None:
        """Insert or replace ``run`` with all its step records; ``created_at`` is kept on update."""
        ...

    async def create(
        self, run: RunRecord, *, key: str | None = None, key_expires_at: datetime | None = None
    ) -> str | None:
        """Insert a new run with its step records: insert-only, never over a stored run.

        With ``key``, the idempotency key ``key`` of ``run.workflow`` is bound to the new run
        until ``key_expires_at``, in the same transaction. If the key is bound to a stored run
        and has not expired at ``run.created_at``, nothing is written and that run's id is
        returned. Returns None when the run was created.

        Raises:
            InvalidRunStateError: a run with ``run.id`` is stored already (nothing is written).
        """
        ...

    async def load(self, run_id: str) -> RunRecord | None:
        """The stored run with its step records in ``seq`` order, or None."""
        ...

    async def list(self, filter: RunFilter | None = None) -> list[RunRecord]:
        """Runs matching ``filter``, newest first (by ``created_at``), with their step records."""
        ...

    async def delete(self, run_id: str) -> bool:
        """Remove a run and its records; False when there was none."""
        ...

    async def checkpoint(self, run: RunRecord, steps: Sequence[StepRecord] = ()) -> None:
        """Atomically write ``run``'s own fields and upsert ``steps`` by seq.

        Not written: ``run.steps``, ``created_at`` (set once) and ``cancel_requested`` (only
        ``request_cancel`` sets it; it is kept).

        Raises:
            LeaseLostError: ``run.owner`` is set and the stored run is owned by someone else.
        """
        ...

    async def prune(self, *, older_than: datetime, status: Sequence[RunStatus | str] | None = None) -> int:
        """Delete finished runs (of ``status``, default all finished ones) that finished before
        ``older_than``; returns how many."""
        ...

    async def claim(
        self,
        run_id: str,
        owner: str,
        lease_expires_at: datetime,
        *,
        now: datetime,
        takeover: str | None = None,
    ) -> RunRecord | None:
        """Take ownership of a run: succeeds when it has no owner or no lease (finished and
        suspended runs hold none), is already ``owner``'s, its lease expired before ``now``, or
        its owner is ``takeover`` (an owner known to be dead). Returns the claimed run (with its
        step records), or None."""
        ...

    async def renew(self, owner: str, lease_expires_at: datetime, run_ids: Sequence[str]) -> int:
        """Extend the lease of each run of ``run_ids`` that ``owner`` holds with a lease;
        returns how many. Runs the owner holds but no longer drives are left to expire."""
        ...

    async def release(self, run_id: str, owner: str) -> None:
        """Drop ``owner``'s claim on ``run_id`` (no-op if not the owner)."""
        ...

    # --- waiting and workers -------------------------------------------------------------

    async def add_signal(
        self, run_id: str, name: str, payload: JSON, at: datetime, *, limit: int | None = None
    ) -> SignalRecord | None:
        """Store a signal for an unfinished run; a suspended run becomes due at ``at``, in the
        same transaction. Returns None (storing nothing) when the run is unknown or finished.

        Raises:
            UnknownSignalError: ``limit`` is given and the run already holds ``limit`` untaken
                signals called ``name`` (the count and the insert are one transaction, so two
                concurrent duplicates cannot both be stored).
        """
        ...

    async def take_signal(self, run_id: str, name: str, seq: int) -> SignalRecord | None:
        """The signal that step visit ``seq`` already took, else the oldest untaken signal
        called ``name``, now marked as taken by ``seq``; None when there is none. Idempotent."""
        ...

    async def list_signals(self, run_id: str) -> builtins.list[SignalRecord]:
        """Every signal stored for a run, oldest first."""
        ...

    async def due(self, now: datetime, limit: int) -> builtins.list[RunRecord]:
        """Pending and suspended runs whose ``wake_at`` is at or before ``now``, earliest first,
        without step records.

        Listings (``list``, ``due``, ``orphans``, ``cancel_requests``) skip a run whose stored
        row cannot be read, logging its id and column on the ``flux.storage`` logger; ``load``
        of that run raises :class:`~flux.errors.StorageCorruptedError`.
        """
        ...

    async def next_wake(self) -> datetime | None:
        """The earliest ``wake_at`` of any pending or suspended run."""
        ...

    async def orphans(self, now: datetime, host: str, limit: int) -> builtins.list[RunRecord]:
        """Running or rolling-back runs that may have lost their driver: no owner or lease, an
        expired lease, or an owner on ``host`` (whose liveness the caller checks); no steps."""
        ...

    async def request_cancel(self, run_id: str, request: Mapping[str, JSON]) -> bool:
        """Ask the process driving an unfinished run to cancel it; False if finished or unknown."""
        ...

    async def cancel_requests(self, owner: str) -> builtins.list[RunRecord]:
        """Unfinished runs held by ``owner`` with a cancellation requested; no steps."""
        ...
