"""The worker: claims runs that need driving and drives them, a bounded number at a time.

A worker takes pending runs (from ``engine.start``), due runs (timers, stored retries,
signalled waits, deadlines) and orphaned runs (whose owner process died or whose lease
expired). Claims are leases in storage, so workers in several processes share the work and
never drive one run twice at the same time.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Iterable, Iterator
from datetime import datetime
from types import TracebackType
from typing import Protocol

from flux._duration import to_count, to_seconds
from flux._scheduler import ScheduleRunner, SchedulingEngine
from flux.clock import Clock
from flux.engine._ownership import host_name, owner_is_dead
from flux.engine._work import WorkSource
from flux.records import RunRecord
from flux.result import RunResult
from flux.schedule import Schedule
from flux.status import RunStatus
from flux.storage.protocol import Storage

logger = logging.getLogger("flux.worker")


class WorkerEngine(SchedulingEngine, Protocol):
    """What a worker needs of a :class:`~flux.FluxEngine`: its storage, clock and owner id,
    and :class:`~flux.engine._work.WorkSource`, the small interface for claiming and driving."""

    storage: Storage
    clock: Clock
    owner: str
    poll_interval: float
    work: WorkSource

    async def start_engine(self) -> None: ...

    def notify(self, reason: str | None = None, run_id: str | None = None) -> None: ...

    async def check_cancel_requests(self) -> int: ...


class Worker:
    """Drives an engine's runs in the background.

    Args:
        engine: the engine whose storage, workflows and clock the worker uses.
        concurrency: at most this many runs in flight at once.
        grace_period: on stop, seconds to let running steps finish before they are cancelled
            (their runs are released for another worker to take over).
        schedules: cron :class:`~flux.Schedule` objects this worker fires (each slot starts
            one run, however many workers share the schedule).

    Use ``async with engine.worker(concurrency=4):`` or ``await Worker(engine).run()``.
    """

    def __init__(
        self,
        engine: WorkerEngine,
        *,
        concurrency: int = 10,
        grace_period: float = 30.0,
        schedules: Iterable[Schedule] = (),
    ) -> None:
        to_count(concurrency, "concurrency", minimum=1)
        grace_period = to_seconds(grace_period, "grace_period", zero=True)
        self.engine = engine
        self.concurrency = concurrency
        self.grace_period = grace_period
        self._tasks: dict[asyncio.Task[RunResult], str] = {}
        self._stopping = False
        self._runner: asyncio.Task[None] | None = None
        self._skipped: set[str] = set()
        self._schedules = ScheduleRunner(engine, schedules)
        self.completed = 0
        """Runs this worker drove to an end or a suspension."""

    @property
    def in_flight(self) -> int:
        """Runs being driven now."""
        return len(self._tasks)

    def stop(self) -> None:
        """Stop claiming work; :meth:`run` returns once running steps finish (or the grace ends)."""
        self._stopping = True
        self.engine.notify()

    async def run(self, *, handle_signals: bool = False) -> None:
        """Claim and drive runs until :meth:`stop` (or SIGTERM/SIGINT with ``handle_signals``)."""
        await self.engine.start_engine()
        await self._schedules.start()
        loop = asyncio.get_running_loop()
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
        work = self.engine.work
        try:
            while not self._stopping:
                work.clear_news()
                idle = self.engine.poll_interval
                try:
                    await self._schedules.tick()
                    await self._fill()
                    await self.engine.check_cancel_requests()
                    idle = await self._idle_time()
                except Exception:
                    logger.exception("worker could not look for work; trying again")
                await work.idle(idle)  # on the engine's clock
        finally:
            if handle_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
            await self._drain()

    async def _idle_time(self) -> float:
        """Seconds to wait for a wake-up: the poll interval, or less when a run is due sooner.

        A clock that tells when it moves (a test's FakeClock) wakes the worker itself.
        """
        engine = self.engine
        if callable(getattr(engine.clock, "subscribe", None)):
            return engine.poll_interval
        wake_at = await engine.storage.next_wake()
        if wake_at is None:
            return engine.poll_interval
        seconds = (wake_at - engine.clock.now()).total_seconds()
        # Due already but not taken here (at capacity, or claimed elsewhere): poll as usual.
        return engine.poll_interval if seconds <= 0 else min(engine.poll_interval, seconds)

    async def __aenter__(self) -> Worker:
        await self.engine.start_engine()
        await self._schedules.start()
        self._runner = asyncio.get_running_loop().create_task(self.run())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        if self._runner is not None:
            await self._runner

    async def _fill(self) -> None:
        capacity = self.concurrency - len(self._tasks)
        if capacity <= 0:
            return
        engine = self.engine
        now = engine.clock.now()
        # Runs that other workers claimed a moment ago are still due until their first
        # checkpoint: look further than the capacity and leave those to their claimers, so
        # that workers started together do not all queue for the same few runs.
        candidates = [
            run for run in await engine.storage.due(now, 4 * capacity) if not _held(run, engine.owner, now)
        ]
        for run in await engine.storage.orphans(now, host_name(), capacity):
            # Runs of this very engine too: one whose driver stopped (an error escaped it) is
            # no longer renewed, and is taken back here once its lease has lapsed.
            if not engine.work.driving(run.id) and _abandoned(run, now):
                candidates.append(run)
        # Claimed a wave at a time, a wave's claims at once: a claim is a commit, and one
        # after another they would hold a worker to one new run per commit latency.
        left = iter(candidates)
        while len(self._tasks) < self.concurrency:
            wave = self._wave(left, self.concurrency - len(self._tasks))
            if not wave:
                return
            if len(wave) == 1:  # a claim alone needs no task of its own
                await self._take(wave[0])
                continue
            for outcome in await asyncio.gather(*map(self._take, wave), return_exceptions=True):
                if outcome is not None:
                    raise outcome

    def _wave(self, candidates: Iterator[RunRecord], size: int) -> list[RunRecord]:
        """The next ``size`` candidates this worker may take."""
        wave: dict[str, RunRecord] = {}
        for run in candidates:
            # A run taken on an earlier pass may not have started yet (so is not active yet).
            taken = run.id in self._tasks.values() or run.id in wave
            if not self.engine.work.driving(run.id) and run.id not in self._skipped and not taken:
                wave[run.id] = run
                if len(wave) == size:
                    break
        return list(wave.values())

    async def _take(self, run: RunRecord) -> None:
        work = self.engine.work
        try:
            plan = work.plan_for(run)
        except Exception as exc:
            self._skipped.add(run.id)
            logger.error("worker leaves run %s to others: %s", run.id, exc)
            return
        claimed = await work.claim(run)
        if claimed is None:
            return
        if not _still_wanted(claimed, work.clock.now()):
            # Another worker drove it between our look and our claim: a finished run would be
            # finished again, a failed one run again.
            await work.release(run.id)
            return
        task = asyncio.get_running_loop().create_task(work.drive(plan, claimed, None))
        self._tasks[task] = run.id
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[RunResult]) -> None:
        run_id = self._tasks.pop(task, None)
        if not task.cancelled():
            error = task.exception()
            if error is not None:
                logger.error("worker failed to drive run %s: %r", run_id, error)
            else:
                self.completed += 1
        self.engine.notify()

    async def _drain(self) -> None:
        """Let running steps finish for the grace period, then cancel and release the rest."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=self.grace_period)
        left = {task: self._tasks.get(task) for task in pending}
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for run_id in left.values():
            if run_id is not None:
                await self.engine.work.release(run_id)


def _still_wanted(run: RunRecord, now: datetime) -> bool:
    """Whether a claimed candidate still needs driving: in flight, or waiting and due."""
    if run.status in (RunStatus.RUNNING, RunStatus.ROLLING_BACK):
        return True
    if run.status in (RunStatus.PENDING, RunStatus.SUSPENDED):
        return run.wake_at is not None and run.wake_at <= now
    return False


def _held(run: RunRecord, owner: str, now: datetime) -> bool:
    """Whether another live owner holds ``run`` with a lease that has not expired."""
    if run.owner is None or run.owner == owner or run.lease_expires_at is None:
        return False
    return run.lease_expires_at >= now and not owner_is_dead(run.owner)


def _abandoned(run: RunRecord, now: datetime) -> bool:
    """A running run whose driver is gone: no owner or lease, lease expired, or owner dead."""
    if run.owner is None or run.lease_expires_at is None:
        return True
    if run.lease_expires_at < now:
        return True
    return owner_is_dead(run.owner)
