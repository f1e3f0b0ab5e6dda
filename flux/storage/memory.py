"""MemoryStorage: the executable reference of the storage protocol, kept in a dict."""

from __future__ import annotations

import builtins
import itertools
from collections.abc import Sequence
from datetime import datetime

import attrs

from flux.errors import LeaseLostError
from flux.records import RunFilter, RunRecord, StepRecord
from flux.serde import copy_json
from flux.status import RunStatus
from flux.storage._common import finished_statuses, paginate


def _copy_step(record: StepRecord) -> StepRecord:
    if record.output is None and not record.data_set and not record.actions:
        return record
    return attrs.evolve(
        record,
        output=copy_json(record.output),
        data_set=copy_json(dict(record.data_set)),
        actions=copy_json(dict(record.actions)),
    )


def _copy_header(run: RunRecord) -> RunRecord:
    return attrs.evolve(run, input=copy_json(run.input), steps=())


class _Entry:
    __slots__ = ("order", "run", "steps")

    def __init__(self, run: RunRecord, order: int) -> None:
        self.run = run
        self.order = order
        self.steps: dict[int, StepRecord] = {}


class MemoryStorage:
    """Runs in a dict: fast, for tests and for engines that need no durability.

    >>> import asyncio
    >>> asyncio.run(MemoryStorage().load("missing")) is None
    True
    """

    def __init__(self) -> None:
        self._runs: dict[str, _Entry] = {}
        self._order = itertools.count()

    async def init(self) -> None:
        """Nothing to prepare."""

    async def close(self) -> None:
        """Nothing to release; the runs stay in memory until the object is dropped."""

    async def save(self, run: RunRecord) -> None:
        entry = self._runs.get(run.id)
        if entry is None:
            entry = self._runs[run.id] = _Entry(_copy_header(run), next(self._order))
        else:
            entry.run = attrs.evolve(_copy_header(run), created_at=entry.run.created_at)
        entry.steps = {record.seq: _copy_step(record) for record in run.steps}

    async def load(self, run_id: str) -> RunRecord | None:
        entry = self._runs.get(run_id)
        return None if entry is None else self._assemble(entry)

    async def list(self, filter: RunFilter | None = None) -> builtins.list[RunRecord]:
        filter = filter or RunFilter()
        entries = [e for e in self._runs.values() if filter.matches(e.run)]
        entries.sort(key=lambda e: (e.run.created_at, e.order), reverse=True)
        return [self._assemble(e) for e in paginate(entries, filter)]

    async def delete(self, run_id: str) -> bool:
        return self._runs.pop(run_id, None) is not None

    async def checkpoint(self, run: RunRecord, steps: Sequence[StepRecord] = ()) -> None:
        entry = self._runs.get(run.id)
        if entry is None:
            entry = self._runs[run.id] = _Entry(_copy_header(run), next(self._order))
        else:
            if run.owner is not None and entry.run.owner != run.owner:
                raise LeaseLostError(
                    f"run {run.id} is now owned by {entry.run.owner}, not {run.owner}",
                    run_id=run.id,
                )
            entry.run = attrs.evolve(_copy_header(run), created_at=entry.run.created_at)
        for record in steps:
            entry.steps[record.seq] = _copy_step(record)

    async def prune(self, *, older_than: datetime, status: Sequence[RunStatus | str] | None = None) -> int:
        statuses = finished_statuses(status)
        doomed = [
            run_id
            for run_id, e in self._runs.items()
            if e.run.status in statuses and (e.run.finished_at or e.run.updated_at) < older_than
        ]
        for run_id in doomed:
            del self._runs[run_id]
        return len(doomed)

    async def claim(
        self,
        run_id: str,
        owner: str,
        lease_expires_at: datetime,
        *,
        now: datetime,
        takeover: str | None = None,
    ) -> RunRecord | None:
        entry = self._runs.get(run_id)
        if entry is None:
            return None
        current, expires = entry.run.owner, entry.run.lease_expires_at
        free = current is None or expires is None or current in (owner, takeover) or expires < now
        if not free:
            return None
        entry.run = attrs.evolve(entry.run, owner=owner, lease_expires_at=lease_expires_at)
        return self._assemble(entry)

    async def renew(self, owner: str, lease_expires_at: datetime) -> int:
        count = 0
        for entry in self._runs.values():
            if entry.run.owner == owner and entry.run.lease_expires_at is not None:
                entry.run = attrs.evolve(entry.run, lease_expires_at=lease_expires_at)
                count += 1
        return count

    async def release(self, run_id: str, owner: str) -> None:
        entry = self._runs.get(run_id)
        if entry is not None and entry.run.owner == owner:
            entry.run = attrs.evolve(entry.run, owner=None, lease_expires_at=None)

    def _assemble(self, entry: _Entry) -> RunRecord:
        steps = tuple(_copy_step(entry.steps[seq]) for seq in sorted(entry.steps))
        return attrs.evolve(entry.run, input=copy_json(entry.run.input), steps=steps)
