"""MemoryStorage: the executable reference of the storage protocol, kept in a dict."""

from __future__ import annotations

import builtins
import itertools
from collections.abc import Mapping, Sequence
from datetime import datetime

import attrs

from flux.errors import InvalidRunStateError, LeaseLostError, UnknownSignalError
from flux.records import EMPTY, JSON, RunFilter, RunRecord, SignalRecord, StepRecord
from flux.serde import SHARED, copy_json
from flux.status import RunStatus
from flux.storage._common import duplicate_signal, finished_statuses, paginate


class _Step:
    """One stored step visit with JSON parts a caller could change: private copies of them.

    The record itself is frozen; its own ``output``, ``data_set`` and ``actions`` stay the
    caller's objects and are never handed out.
    """

    __slots__ = ("actions", "data_set", "output", "record")

    def __init__(self, record: StepRecord) -> None:
        self.record = record
        output, data_set, actions = record.output, record.data_set, record.actions
        self.output = output if type(output) in SHARED else copy_json(output)
        self.data_set = _copy_mapping(data_set) if data_set else EMPTY
        self.actions = _copy_mapping(actions) if actions else EMPTY

    def copy(self) -> StepRecord:
        """The stored visit as a record the caller owns (its JSON parts copied again)."""
        return attrs.evolve(
            self.record,
            output=copy_json(self.output),
            data_set=self.data_set and copy_json(self.data_set),
            actions=self.actions and copy_json(self.actions),
        )


def _copy_mapping(mapping: Mapping[str, JSON]) -> Mapping[str, JSON]:
    copy: dict[str, JSON] = copy_json(mapping if type(mapping) is dict else dict(mapping))
    return copy


def _keep(record: StepRecord) -> StepRecord | _Step:
    """What to store of ``record``: the record itself when nothing in it can change."""
    if type(record.output) in SHARED and record.data_set is EMPTY and record.actions is EMPTY:
        return record
    return _Step(record)


def _give(stored: StepRecord | _Step) -> StepRecord:
    return stored.copy() if isinstance(stored, _Step) else stored


def _copy_cancel(request: Mapping[str, JSON] | None) -> dict[str, JSON] | None:
    return None if request is None else copy_json(dict(request))


class _Entry:
    """One stored run. ``run`` may be the caller's own frozen header: the fields a caller could
    still mutate (``input``, ``cancel_requested``) and ``created_at`` are kept beside it."""

    __slots__ = ("cancel_requested", "created_at", "input", "order", "run", "steps")

    def __init__(self, run: RunRecord, order: int) -> None:
        self.run = run
        self.order = order
        self.created_at = run.created_at
        self.input = copy_json(run.input)
        self.cancel_requested = _copy_cancel(run.cancel_requested)
        self.steps: dict[int, StepRecord | _Step] = {}

    def header(self) -> RunRecord:
        """The stored run's own fields, as copies."""
        return attrs.evolve(
            self.run,
            input=copy_json(self.input),
            created_at=self.created_at,
            cancel_requested=_copy_cancel(self.cancel_requested),
            steps=(),
        )


class MemoryStorage:
    """Runs in a dict: fast, for tests and for engines that need no durability.

    >>> import asyncio
    >>> asyncio.run(MemoryStorage().load("missing")) is None
    True
    """

    def __init__(self) -> None:
        self._runs: dict[str, _Entry] = {}
        self._order = itertools.count()
        self._signals: dict[str, builtins.list[SignalRecord]] = {}
        self._signal_ids = itertools.count(1)
        self._keys: dict[tuple[str, str], tuple[str, datetime]] = {}

    async def init(self) -> None:
        """Nothing to prepare."""

    async def close(self) -> None:
        """Nothing to release; the runs stay in memory until the object is dropped."""

    async def save(self, run: RunRecord) -> None:
        entry = self._runs.get(run.id)
        if entry is None:
            entry = self._runs[run.id] = _Entry(run, next(self._order))
        else:
            entry.run = run
            entry.input = copy_json(run.input)
            entry.cancel_requested = _copy_cancel(run.cancel_requested)
        entry.steps = {record.seq: _keep(record) for record in run.steps}

    async def create(
        self, run: RunRecord, *, key: str | None = None, key_expires_at: datetime | None = None
    ) -> str | None:
        if key is not None:
            if key_expires_at is None:
                raise ValueError("create(key=...) needs key_expires_at")
            bound = self._keys.get((run.workflow, key))
            if bound is not None and bound[1] > run.created_at and bound[0] in self._runs:
                return bound[0]
        if run.id in self._runs:
            raise InvalidRunStateError(f"run id {run.id!r} is already stored", run_id=run.id)
        entry = self._runs[run.id] = _Entry(run, next(self._order))
        entry.steps = {record.seq: _keep(record) for record in run.steps}
        if key is not None and key_expires_at is not None:
            self._keys[(run.workflow, key)] = (run.id, key_expires_at)
        return None

    async def load(self, run_id: str) -> RunRecord | None:
        entry = self._runs.get(run_id)
        return None if entry is None else self._assemble(entry)

    async def list(self, filter: RunFilter | None = None) -> builtins.list[RunRecord]:
        filter = filter or RunFilter()
        entries = [e for e in self._runs.values() if filter.matches(e.run)]
        entries.sort(key=lambda e: (e.created_at, e.order), reverse=True)
        return [self._assemble(e) for e in paginate(entries, filter)]

    async def delete(self, run_id: str) -> bool:
        return self._forget({run_id}) == 1

    def _forget(self, run_ids: set[str]) -> int:
        """Drop runs with their signals and idempotency keys (one pass over the keys)."""
        for run_id in run_ids:
            self._signals.pop(run_id, None)
        self._keys = {key: bound for key, bound in self._keys.items() if bound[0] not in run_ids}
        return sum(self._runs.pop(run_id, None) is not None for run_id in run_ids)

    async def checkpoint(self, run: RunRecord, steps: Sequence[StepRecord] = ()) -> None:
        entry = self._runs.get(run.id)
        if entry is None:
            entry = self._runs[run.id] = _Entry(run, next(self._order))
        else:
            if run.owner is not None and entry.run.owner != run.owner:
                raise LeaseLostError(
                    f"run {run.id} is now owned by {entry.run.owner}, not {run.owner}",
                    run_id=run.id,
                )
            if run.input is not entry.run.input:
                entry.input = copy_json(run.input)
            if run.labels is not entry.run.labels and run.labels != entry.run.labels:
                run = attrs.evolve(run, labels=entry.run.labels)  # set once, never checkpointed
            entry.run = run
        for record in steps:
            entry.steps[record.seq] = _keep(record)

    async def prune(self, *, older_than: datetime, status: Sequence[RunStatus | str] | None = None) -> int:
        statuses = finished_statuses(status)
        return self._forget(
            {
                run_id
                for run_id, e in self._runs.items()
                if e.run.status in statuses and (e.run.finished_at or e.run.updated_at) < older_than
            }
        )

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

    async def renew(self, owner: str, lease_expires_at: datetime, run_ids: Sequence[str]) -> int:
        count = 0
        for run_id in set(run_ids):
            entry = self._runs.get(run_id)
            if entry is not None and entry.run.owner == owner and entry.run.lease_expires_at is not None:
                entry.run = attrs.evolve(entry.run, lease_expires_at=lease_expires_at)
                count += 1
        return count

    async def release(self, run_id: str, owner: str) -> None:
        entry = self._runs.get(run_id)
        if entry is not None and entry.run.owner == owner:
            entry.run = attrs.evolve(entry.run, owner=None, lease_expires_at=None)

    async def add_signal(
        self, run_id: str, name: str, payload: JSON, at: datetime, *, limit: int | None = None
    ) -> SignalRecord | None:
        entry = self._runs.get(run_id)
        if entry is None or entry.run.status.finished:
            return None
        if limit is not None:
            queued = self._signals.get(run_id, ())
            if sum(1 for s in queued if s.name == name and s.consumed_by is None) >= limit:
                raise UnknownSignalError(duplicate_signal(run_id, name), run_id=run_id)
        signal = SignalRecord(
            id=next(self._signal_ids),
            run_id=run_id,
            name=name,
            payload=copy_json(payload),
            created_at=at,
        )
        self._signals.setdefault(run_id, []).append(signal)
        if entry.run.status == RunStatus.SUSPENDED:
            entry.run = attrs.evolve(entry.run, wake_at=at)
        return attrs.evolve(signal, payload=copy_json(payload))

    async def take_signal(self, run_id: str, name: str, seq: int) -> SignalRecord | None:
        signals = self._signals.get(run_id, [])
        for signal in signals:
            if signal.name == name and signal.consumed_by == seq:
                return attrs.evolve(signal, payload=copy_json(signal.payload))
        for index, signal in enumerate(signals):
            if signal.name == name and signal.consumed_by is None:
                signals[index] = attrs.evolve(signal, consumed_by=seq)
                return attrs.evolve(signals[index], payload=copy_json(signal.payload))
        return None

    async def list_signals(self, run_id: str) -> builtins.list[SignalRecord]:
        return [
            attrs.evolve(signal, payload=copy_json(signal.payload))
            for signal in self._signals.get(run_id, [])
        ]

    async def due(self, now: datetime, limit: int) -> builtins.list[RunRecord]:
        waiting = (RunStatus.PENDING, RunStatus.SUSPENDED)
        entries = [
            e
            for e in self._runs.values()
            if e.run.status in waiting and e.run.wake_at is not None and e.run.wake_at <= now
        ]
        entries.sort(key=lambda e: e.run.wake_at or now)
        return [e.header() for e in entries[:limit]]

    async def next_wake(self) -> datetime | None:
        waiting = (RunStatus.PENDING, RunStatus.SUSPENDED)
        times = [e.run.wake_at for e in self._runs.values() if e.run.status in waiting and e.run.wake_at]
        return min(times, default=None)

    async def orphans(self, now: datetime, host: str, limit: int) -> builtins.list[RunRecord]:
        flying = (RunStatus.RUNNING, RunStatus.ROLLING_BACK)
        found = []
        for entry in self._runs.values():
            run = entry.run
            if run.status not in flying:
                continue
            expires = run.lease_expires_at
            if run.owner is None or expires is None or expires < now or run.owner.startswith(host + "/"):
                found.append(entry.header())
        return found[:limit]

    async def request_cancel(self, run_id: str, request: Mapping[str, JSON]) -> bool:
        entry = self._runs.get(run_id)
        if entry is None or entry.run.status.finished:
            return False
        entry.cancel_requested = _copy_cancel(request)
        return True

    async def cancel_requests(self, owner: str) -> builtins.list[RunRecord]:
        return [
            e.header()
            for e in self._runs.values()
            if e.run.owner == owner and e.cancel_requested and not e.run.status.finished
        ]

    def _assemble(self, entry: _Entry) -> RunRecord:
        steps = tuple(_give(entry.steps[seq]) for seq in sorted(entry.steps))
        return attrs.evolve(entry.header(), steps=steps)
