"""The engine's control operations: signals and cancellation.

They are methods of :class:`~flux.FluxEngine`; this module keeps them apart from running and
durability, one concept per module.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from flux.clock import Clock
from flux.engine._driver import EngineContext, RunDriver
from flux.engine._plans import WorkflowRegistry, check_signal
from flux.engine._reads import ReadOps
from flux.errors import InvalidRunStateError, RunError
from flux.events import EventBus, SignalReceived
from flux.plan import Workflow
from flux.records import RunRecord, SignalRecord
from flux.result import RunResult
from flux.serde import check_json
from flux.storage.protocol import Storage


class ControlOps(ReadOps):
    """Signal and cancel runs (mixed into :class:`~flux.FluxEngine`)."""

    storage: Storage
    clock: Clock
    owner: str
    _env: EngineContext
    _registry: WorkflowRegistry
    _bus: EventBus
    _active: dict[str, RunDriver]
    _tasks: dict[str, asyncio.Task[Any]]
    _running: Callable[[str], asyncio.Future[RunResult | None] | None]
    notify: Callable[[str | None, str | None], None]
    _claim: Callable[[RunRecord], Awaitable[RunRecord | None]]
    _release: Callable[[str], Awaitable[None]]
    _reserved: set[str]
    _kept: dict[str, asyncio.Event]
    _driving: Callable[[str], bool]

    # --- waiting and control --------------------------------------------------------------

    async def signal(self, run_id: str, signal: str, payload: Any = None) -> SignalRecord:
        """Deliver ``signal`` with ``payload`` (JSON) to a run, durably.

        A signal that arrives before its wait is kept and taken when the wait is reached; the
        payload becomes the waiting step's output. A suspended run waiting for it becomes due
        at once (a worker resumes it).

        Raises:
            RunNotFoundError: unknown run.
            InvalidRunStateError: the run has finished or was cancelled.
            UnknownSignalError: no wait of the run will take ``signal`` (the message lists
                the names it can take), or every such wait already has a signal waiting.
            SerializationError: ``payload`` is not JSON.
        """
        run = await self._load(run_id)
        if run.status.finished:
            raise InvalidRunStateError(
                f"run {run_id} is {run.status.value}; signals can only go to unfinished runs", run_id=run_id
            )
        check_json(payload, f"the payload of signal {signal!r}")
        try:
            plan: Workflow[Any] | None = self._registry.for_run(run)
        except RunError:
            plan = None  # not known here: the names cannot be checked
        # The duplicate check happens in storage, in one transaction with the insert.
        limit = None if plan is None else check_signal(plan, run, signal)
        stored = await self.storage.add_signal(run_id, signal, payload, self.clock.now(), limit=limit)
        if stored is None:
            raise InvalidRunStateError(f"run {run_id} finished before the signal arrived", run_id=run_id)
        driver = self._active.get(run_id)
        if driver is not None:  # a branch of it may be waiting in memory
            driver.activity.poke()
        if self._bus.wants(SignalReceived.name):
            await self._bus.emit(
                SignalReceived(
                    run_id=run_id,
                    workflow=run.workflow,
                    timestamp=self.clock.now(),
                    signal=signal,
                    payload=payload,
                )
            )
        self.notify("signal", run_id)
        return stored

    async def cancel(self, run_id: str, reason: str | None = None, *, compensate: bool = False) -> RunResult:
        """Cancel a run.

        A run driven here has its running step cancelled (an async step is interrupted; a sync
        step's thread is abandoned); a suspended or pending run is marked cancelled; a run
        driven by another process is asked to stop (it notices within a poll interval); a
        finished run is left alone and its result returned as it is. With ``compensate=True``
        completed steps are compensated first. ``workflow_cancel`` is emitted.
        """
        driver, task = self._active.get(run_id), self._tasks.get(run_id)
        ending = self._running(run_id) if task is not None else None  # None too when no driver
        if driver is not None and task is not None and ending is not None:
            driver.request_cancel(reason, compensate)
            task.cancel()
            result = await ending
            if result is not None and result.status.finished:
                return result
            # It suspended before the request reached it: cancel the stored run below.
        run = await self._load(run_id)
        if run.status.finished:
            return RunResult.from_record(run)
        claimed = await self._claim(run)
        if claimed is None:
            await self.storage.request_cancel(
                run_id, {"reason": reason or "cancelled", "compensate": compensate}
            )
            if not self._driving(run_id):
                self.notify("cancel", run_id)
                return RunResult.from_record(run)  # another process drives it: asked to stop
            # This engine holds it (an execute keeping it, a drive about to start): it takes
            # the request at once (a kept run) or at its next heartbeat.
            kept = self._kept.get(run_id)
            if kept is not None:
                kept.set()
            return await self.wait_result(run_id)
        try:
            plan = self._registry.for_run(claimed)
        except RunError:
            await self._release(run_id)  # no claim left to block workers
            raise
        try:
            driver = RunDriver(
                self._env, plan, claimed, list(claimed.steps), plan.codec.restore(claimed.input)
            )
            driver.request_cancel(reason, compensate)
            return await driver.cancel_now()
        finally:
            self._reserved.discard(run_id)
            kept = self._kept.get(run_id)
            if kept is not None:  # an execute keeping it while it waits on time returns now
                kept.set()

    async def check_cancel_requests(self) -> int:
        """Cancel the runs held here that another process asked to cancel; returns how many.

        A run that suspended after the request was stored but before it was noticed has no
        driver left to notice it: it is cancelled here too.
        """
        count = 0
        for run in await self.storage.cancel_requests(self.owner):
            driver, task = self._active.get(run.id), self._tasks.get(run.id)
            request = run.cancel_requested or {}
            reason, compensate = request.get("reason"), bool(request.get("compensate"))
            if driver is not None and task is not None:
                if driver.cancel_request is None:
                    driver.request_cancel(reason, compensate)
                    task.cancel()
                    count += 1
            elif run.lease_expires_at is None:
                await self.cancel(run.id, reason, compensate=compensate)
                count += 1
        return count
