"""Fires cron schedules for a worker: one run per due slot, once across all workers.

Every worker given a schedule looks at it on each pass. A slot's run is started with the
idempotency key "schedule name + slot time", so when several workers (in one process or on
many hosts) see the same slot, storage binds the key once and the others get the same run
back. Where a schedule stands (the last slot it fired) is read back from the labels of its
newest run, so a restarted worker knows which slots it missed.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Protocol

from flux.clock import Clock
from flux.plan import Workflow
from flux.result import RunResult
from flux.schedule import SCHEDULE_LABEL, SLOT_LABEL, Schedule, due_slots

logger = logging.getLogger("flux.schedule")

_RECALL = 100  # newest runs read to find where a schedule stands


def check_schedules(schedules: Iterable[Schedule]) -> tuple[Schedule, ...]:
    """The schedules as a tuple, refusing non-schedules and duplicate names."""
    seen: set[str] = set()
    result = []
    for schedule in schedules:
        if not isinstance(schedule, Schedule):
            raise TypeError(f"schedules must be flux.Schedule objects, got {schedule!r}")
        if schedule.name in seen:
            raise ValueError(f"two schedules are named {schedule.name!r}; give each a unique name")
        seen.add(schedule.name)
        result.append(schedule)
    return tuple(result)


class SchedulingEngine(Protocol):
    """What firing schedules needs of an engine (``FluxEngine`` is one)."""

    clock: Clock

    def register(self, workflow: Workflow[Any]) -> Workflow[Any]: ...

    async def start(
        self,
        workflow: Workflow[Any],
        input: Any = None,
        *,
        idempotency_key: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> str: ...

    async def list(
        self, name: str | None = None, *, limit: int | None = None, labels: Mapping[str, str] | None = None
    ) -> builtins.list[RunResult]: ...

    async def get(self, run_id: str) -> RunResult: ...


class ScheduleRunner:
    """Starts the runs of due cron slots through an engine."""

    def __init__(self, engine: SchedulingEngine, schedules: Iterable[Schedule]) -> None:
        self.engine = engine
        self.schedules = check_schedules(schedules)
        self._last: dict[str, datetime] = {}
        self._last_run: dict[str, str] = {}
        for schedule in self.schedules:
            engine.register(schedule.workflow)

    async def start(self) -> None:
        """Learn where each schedule stands, so that slots before now count as missed only
        if the schedule fired before (call when the worker starts; later calls do nothing)."""
        now = self.engine.clock.now()
        for schedule in self.schedules:
            if schedule.name not in self._last:
                self._last[schedule.name] = await self._recall(schedule, now)

    async def tick(self) -> None:
        """Start the runs of every slot due since the last pass."""
        await self.start()
        for schedule in self.schedules:
            try:
                await self._fire(schedule)
            except Exception:
                logger.exception("schedule %s could not fire; trying again", schedule.name)

    async def _fire(self, schedule: Schedule) -> None:
        now = self.engine.clock.now()
        for slot in due_slots(schedule, self._last[schedule.name], now):
            if not schedule.overlap and await self._busy(schedule):
                logger.info("schedule %s skips slot %s: its previous run is unfinished", schedule.name, slot)
                continue
            self._last_run[schedule.name] = await self.engine.start(
                schedule.workflow,
                schedule.input,
                idempotency_key=schedule.key(slot),
                labels=schedule.labels(slot),
            )
        self._last[schedule.name] = now

    async def _recall(self, schedule: Schedule, now: datetime) -> datetime:
        """The newest slot the schedule fired (from its runs' labels), or ``now`` if it never fired.

        Runs a catch-up started together share a creation time, so the newest few runs are
        read and the latest slot among them wins.
        """
        wanted = {SCHEDULE_LABEL: schedule.name}
        runs = await self.engine.list(schedule.workflow.name, labels=wanted, limit=_RECALL)
        fired = [(run.labels[SLOT_LABEL], run.id) for run in runs if SLOT_LABEL in run.labels]
        if not fired:
            return now
        slot, self._last_run[schedule.name] = max(fired)
        return datetime.fromisoformat(slot)

    async def _busy(self, schedule: Schedule) -> bool:
        run_id = self._last_run.get(schedule.name)
        if run_id is None:
            return False
        return not (await self.engine.get(run_id)).status.finished
