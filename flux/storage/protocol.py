"""The storage protocol every backend implements.

Storage knows runs and step records, never step code. Loads return copies: changing a loaded
record never changes what is stored. ``flux.testing.storage_conformance`` checks a backend
against this contract.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

from flux.records import RunFilter, RunRecord, StepRecord
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
        """Atomically write ``run``'s own fields (not ``run.steps``) and upsert ``steps`` by seq.

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

    async def renew(self, owner: str, lease_expires_at: datetime) -> int:
        """Extend the lease of every run ``owner`` holds; returns how many."""
        ...

    async def release(self, run_id: str, owner: str) -> None:
        """Drop ``owner``'s claim on ``run_id`` (no-op if not the owner)."""
        ...
