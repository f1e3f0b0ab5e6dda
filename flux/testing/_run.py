"""``run_workflow``: run a workflow in a test, with mocks, signals and time that skips ahead."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Mapping
from datetime import timedelta
from typing import Any, TypeVar

from flux.builder import WorkflowBuilder, as_workflow
from flux.engine import FluxEngine
from flux.errors import InvalidRunStateError
from flux.plan import Workflow
from flux.records import JSON, RunFilter, RunRecord
from flux.status import RunStatus, StepStatus
from flux.storage.protocol import Storage
from flux.testing._clock import FakeClock
from flux.testing._mocks import CallJournal, instrument
from flux.testing._recorder import EventRecorder
from flux.testing._workflow_test import WorkflowTest

T = TypeVar("T")

QUIET = 0.05
"""Real seconds per look at a running attempt; after three quiet looks the clock jumps."""
_QUIET_LOOKS = 3
_MAX_ROUNDS = 10_000
_WAITING = (RunStatus.PENDING, RunStatus.SUSPENDED)


async def run_workflow(
    workflow: Workflow[Any] | WorkflowBuilder[Any],
    input: Any = None,
    *,
    mocks: Mapping[str, object] | None = None,
    signals: Mapping[str, JSON] | None = None,
    clock: FakeClock | None = None,
    storage: Storage | None = None,
) -> WorkflowTest:
    """Run ``workflow`` on ``input`` to its end in a fresh engine, and return a :class:`WorkflowTest`.

    Args:
        workflow: a plan or a builder.
        input: the run's input, as for ``engine.execute``.
        mocks: by step name: a value replaces the step's output (its handler is not called),
            a callable replaces its handler, an exception instance makes it raise (retries
            apply). Steps nested in parallel groups and branches can be mocked too; a mocked
            child step returns the mock instead of starting a child run.
        signals: by signal name: the payload delivered as soon as a run waits for that signal
            (once per name).
        clock: the :class:`FakeClock` to use (a new one by default). Time jumps to the next due
            time: durable sleeps and retry delays are skipped over, and an async attempt that
            makes no progress for a moment (three looks, ``QUIET`` real seconds apart) moves
            the clock to its next timer, so timeouts fire at once. The clock never jumps while
            a sync handler runs in its thread.
        storage: the store (``MemoryStorage()`` by default); it is opened and closed here.

    The run ends completed, failed, rolled back or cancelled, or stays suspended when it waits
    for a signal that ``signals`` does not hold. A failing step does not raise: assert on the
    returned :class:`WorkflowTest`.

    Raises:
        ValueError: a mock names a step the plan lacks, or one without a handler.
        TypeError: a mock is an exception class rather than an instance, or ``workflow`` is
            neither a Workflow nor a builder.
        InvalidInputError: ``input`` does not fit the workflow.
    """
    journal = CallJournal()
    plan = instrument(as_workflow(workflow), mocks or {}, journal)
    clock = clock if clock is not None else FakeClock()
    events = EventRecorder()
    async with FluxEngine(storage, clock=clock, on={"*": events}) as engine:
        driver = _Driver(engine, clock, journal, dict(signals or {}))
        result = await driver.settle(engine.execute(plan, input))
        await driver.until_done(result.id)
        result = await engine.get(result.id)
    return WorkflowTest(result=result, events=events, clock=clock, workflow=plan, journal=journal)


def run_workflow_sync(
    workflow: Workflow[Any] | WorkflowBuilder[Any],
    input: Any = None,
    *,
    mocks: Mapping[str, object] | None = None,
    signals: Mapping[str, JSON] | None = None,
    clock: FakeClock | None = None,
    storage: Storage | None = None,
) -> WorkflowTest:
    """:func:`run_workflow` for plain (not async) tests: runs it in a new event loop.

    Raises:
        RuntimeError: called where an event loop is already running (``await run_workflow``
            there instead).
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError(
            "run_workflow_sync cannot run inside a running event loop; use 'await run_workflow(...)' there"
        )
    return asyncio.run(
        run_workflow(workflow, input, mocks=mocks, signals=signals, clock=clock, storage=storage)
    )


class _Driver:
    """Moves a run and its children along: signals, due runs, fake time."""

    def __init__(self, engine: FluxEngine, clock: FakeClock, journal: CallJournal, signals: dict[str, JSON]):
        self.engine = engine
        self.clock = clock
        self.journal = journal
        self.signals = signals

    async def settle(self, call: Awaitable[T]) -> T:
        """Await ``call``; while an async attempt is stuck, jump the clock to its next timer."""
        task = asyncio.ensure_future(call)
        last: tuple[int, ...] | None = None
        quiet = 0
        while True:
            done, _ = await asyncio.wait({task}, timeout=QUIET)
            if done:
                return task.result()
            journal = self.journal
            mark = (journal.progress, journal.async_running, journal.sync_running)
            quiet = quiet + 1 if mark == last else 0
            last = mark
            due = self.clock.next_due
            if (
                quiet >= _QUIET_LOOKS
                and due is not None
                and journal.async_running
                and not journal.sync_running
            ):
                await self.clock.advance(max(due - self.clock.now(), timedelta(0)))
                quiet = 0

    async def until_done(self, run_id: str) -> None:
        """Deliver awaited signals and wake due runs, jumping to each next due time, until
        ``run_id`` has finished or waits for nothing that will come.

        Only ``run_id`` and its child runs are touched: other runs in the store are left alone.
        """
        storage = self.engine.storage
        for _ in range(_MAX_ROUNDS):
            run = await storage.load(run_id)
            if run is None or run.status.finished:
                return
            waiting = [
                run
                for run in await storage.list(RunFilter(status=_WAITING))
                if run.id == run_id or run.id.startswith(run_id + "/")
            ]
            if await self._deliver(waiting):
                continue  # a signalled run is due now
            now = self.clock.now()
            due = [run for run in waiting if run.wake_at is not None and run.wake_at <= now]
            for ready in due:
                # It may have ended or been taken meanwhile (a parent resumed its child).
                with contextlib.suppress(InvalidRunStateError):
                    await self.settle(self.engine.resume(ready.id))
            if due:
                continue
            wakes = [run.wake_at for run in waiting if run.wake_at is not None]
            if not wakes:
                return  # it waits for a signal nobody sends
            await self.clock.advance(max(min(wakes) - now, timedelta(0)))
        raise RuntimeError(f"run {run_id} did not settle after {_MAX_ROUNDS} rounds of waking it")

    async def _deliver(self, runs: list[RunRecord]) -> bool:
        """Send each awaited signal that ``signals`` holds; True when one was sent."""
        sent = False
        for run in runs:
            for record in run.steps:
                name = record.waiting_for
                if record.status == StepStatus.SUSPENDED and name is not None and name in self.signals:
                    await self.engine.signal(run.id, name, self.signals.pop(name))
                    sent = True
        return sent
