"""engine.cancel: running, suspended, pending and finished runs; compensation; other processes."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest
from suspending import suspended_run

from flux import (
    FluxEngine,
    InvalidRunStateError,
    RetryPolicy,
    RunNotFoundError,
    RunStatus,
    StepContext,
    StepStatus,
    Storage,
    WorkflowNotRegisteredError,
    create_workflow,
)
from flux.testing import EventRecorder, FakeClock

StorageFactory = Callable[[], Storage]


class Blocker:
    """An async step that runs until it is cancelled, and says what happened to it."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.cancelled = False

    async def __call__(self, ctx: StepContext[Any]) -> str:
        self.started.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return "released"


async def running_run(engine: FluxEngine, flow: Any, blocker: Blocker) -> tuple[str, asyncio.Task[Any]]:
    task = asyncio.create_task(engine.execute(flow))
    await blocker.started.wait()
    [run] = await engine.list(status="running")
    return run.id, task


# --- runs driven here ---------------------------------------------------------------------


async def test_a_running_async_step_is_cancelled(engine: FluxEngine) -> None:
    recorder = EventRecorder()
    engine.on("*", recorder)
    blocker = Blocker()
    flow = (
        create_workflow("long")
        .step("first", lambda ctx: 1)
        .step("block", blocker)
        .step("never", lambda ctx: 2)
    )
    run_id, executing = await running_run(engine, flow, blocker)

    result = await engine.cancel(run_id, reason="the customer changed their mind")

    assert result.status == RunStatus.CANCELLED
    assert blocker.cancelled
    assert (await executing).status == RunStatus.CANCELLED
    stored = await engine.get(run_id)
    assert stored.status == RunStatus.CANCELLED
    assert [(r.step, r.status) for r in stored.history] == [
        ("first", StepStatus.COMPLETED),
        ("block", StepStatus.FAILED),
    ]
    assert stored.error is not None
    assert (stored.error.type, stored.error.message) == ("Cancelled", "the customer changed their mind")
    [event] = recorder.of("workflow_cancel")
    assert event.reason == "the customer changed their mind"
    assert "never" not in recorder.steps("step_start")


async def test_a_running_sync_step_is_abandoned_and_the_run_cancelled(engine: FluxEngine) -> None:
    started, release = threading.Event(), threading.Event()
    loop = asyncio.get_running_loop()
    noticed = asyncio.Event()

    def blocking(ctx: StepContext[Any]) -> str:
        loop.call_soon_threadsafe(noticed.set)
        started.set()
        release.wait(timeout=30)
        return "too late"

    executing = asyncio.create_task(engine.execute(create_workflow("sync").step("block", blocking)))
    await noticed.wait()
    [run] = await engine.list(status="running")
    try:
        result = await engine.cancel(run.id)
    finally:
        release.set()

    assert result.status == RunStatus.CANCELLED
    assert (await executing).status == RunStatus.CANCELLED
    assert result.outputs == {}


async def test_a_suspended_run_is_marked_cancelled(engine: FluxEngine) -> None:
    recorder = EventRecorder()
    engine.on("*", recorder)
    flow = create_workflow("approval").step("draft", lambda ctx: "d").wait_for_signal("approve")
    run = await engine.execute(flow)

    result = await engine.cancel(run.id, reason="withdrawn")

    assert result.status == RunStatus.CANCELLED
    assert (await engine.get(run.id)).status == RunStatus.CANCELLED
    assert result.history[-1].status == StepStatus.FAILED
    assert [e.reason for e in recorder.of("workflow_cancel")] == ["withdrawn"]
    with pytest.raises(InvalidRunStateError, match="was cancelled; it cannot be resumed"):
        await engine.resume(run.id)
    with pytest.raises(InvalidRunStateError, match="is cancelled"):
        await engine.signal(run.id, "approve")


async def test_a_pending_run_is_cancelled_before_any_step_runs(engine: FluxEngine) -> None:
    calls: list[str] = []
    run_id = await engine.start(create_workflow("queued").step("work", lambda ctx: calls.append("work")))

    result = await engine.cancel(run_id)

    assert result.status == RunStatus.CANCELLED
    assert result.history == ()
    assert await engine.storage.due(engine.clock.now(), 10) == []  # no worker will pick it up
    assert calls == []


async def test_a_finished_run_is_left_alone(engine: FluxEngine) -> None:
    recorder = EventRecorder()
    engine.on("workflow_cancel", recorder)
    done = await engine.execute(create_workflow("quick").step("only", lambda ctx: "ok"))

    result = await engine.cancel(done.id)

    assert result.status == RunStatus.COMPLETED
    assert result.outputs == {"only": "ok"}
    assert (await engine.get(done.id)).status == RunStatus.COMPLETED
    assert recorder.events == []


async def test_cancelling_an_unknown_run_raises(engine: FluxEngine) -> None:
    with pytest.raises(RunNotFoundError):
        await engine.cancel("no-such-run")


async def test_a_run_backing_off_between_retries_can_be_cancelled(engine: FluxEngine) -> None:
    def down(ctx: StepContext[Any]) -> None:
        raise ConnectionError("down")

    flow = create_workflow("retrying").step("call", down, retry=RetryPolicy(initial_delay=600))
    run = await suspended_run(engine, flow)
    assert run.status == RunStatus.SUSPENDED

    result = await engine.cancel(run.id)

    assert result.status == RunStatus.CANCELLED
    assert await engine.storage.next_wake() is None


# --- compensation -------------------------------------------------------------------------


def booking(undone: list[str]) -> Any:
    return (
        create_workflow("trip")
        .step("flight", lambda ctx: "F1", compensate=lambda ctx: undone.append("flight"))
        .step("hotel", lambda ctx: "H1", compensate=lambda ctx: undone.append("hotel"))
        .wait_for_signal("confirm")
    )


async def test_cancel_does_not_compensate_unless_asked(engine: FluxEngine) -> None:
    undone: list[str] = []
    run = await engine.execute(booking(undone))

    result = await engine.cancel(run.id)

    assert result.status == RunStatus.CANCELLED
    assert undone == []
    assert result.outputs == {"flight": "F1", "hotel": "H1"}


async def test_cancel_with_compensate_undoes_completed_steps_newest_first(engine: FluxEngine) -> None:
    undone: list[str] = []
    recorder = EventRecorder()
    engine.on("*", recorder)
    run = await engine.execute(booking(undone))

    result = await engine.cancel(run.id, reason="trip called off", compensate=True)

    assert result.status == RunStatus.CANCELLED
    assert undone == ["hotel", "flight"]
    assert [(r.step, r.status) for r in result.history] == [
        ("flight", StepStatus.COMPENSATED),
        ("hotel", StepStatus.COMPENSATED),
        ("confirm", StepStatus.FAILED),
    ]
    assert recorder.names[-4:] == [
        "step_compensate",
        "step_compensate",
        "rollback_complete",
        "workflow_cancel",
    ]


async def test_cancel_with_compensate_of_a_running_step(engine: FluxEngine) -> None:
    undone: list[str] = []
    blocker = Blocker()
    flow = (
        create_workflow("charge-then-ship")
        .step("charge", lambda ctx: "c", compensate=lambda ctx: undone.append("charge"))
        .step("ship", blocker)
    )
    run_id, executing = await running_run(engine, flow, blocker)

    result = await engine.cancel(run_id, compensate=True)

    assert result.status == RunStatus.CANCELLED
    assert undone == ["charge"]
    assert blocker.cancelled
    assert (await executing).status == RunStatus.CANCELLED


# --- runs driven by another process -------------------------------------------------------


async def test_cancel_of_a_run_driven_elsewhere_is_asked_for_and_noticed_there(
    reopen: StorageFactory, clock: FakeClock
) -> None:
    blocker = Blocker()
    flow = create_workflow("remote").step("block", blocker)
    async with (
        FluxEngine(storage=reopen(), clock=clock) as driver,
        FluxEngine(storage=reopen(), clock=clock) as other,
    ):
        run_id, executing = await running_run(driver, flow, blocker)

        asked = await other.cancel(run_id, reason="from the other process", compensate=False)
        assert asked.status == RunStatus.RUNNING  # only a request: the driver acts on it

        assert await driver.check_cancel_requests() == 1
        result = await executing
        assert await driver.check_cancel_requests() == 0

    assert result.status == RunStatus.CANCELLED
    assert result.error is not None and result.error.message == "from the other process"
    assert blocker.cancelled


async def test_a_worker_notices_a_cancel_request_on_its_own(reopen: StorageFactory, clock: FakeClock) -> None:
    blocker = Blocker()
    undone: list[str] = []
    flow = create_workflow("remote").step(
        "first", lambda ctx: 1, compensate=lambda ctx: undone.append("first")
    )
    flow = flow.step("block", blocker)
    async with (
        FluxEngine(storage=reopen(), clock=clock, poll_interval=0.01, workflows=[flow]) as driver,
        FluxEngine(storage=reopen(), clock=clock, poll_interval=0.01) as other,
        driver.worker(),
    ):
        run_id = await other.start(flow)
        driver.notify()  # in one process the other engine's start does not wake this worker
        await blocker.started.wait()
        await other.cancel(run_id, compensate=True)
        # Polls run on the engines' (fake) clock: the driver is told, and its result awaited.
        driver.notify()
        result = await driver.wait_result(run_id, timeout=10)

    assert result.status == RunStatus.CANCELLED
    assert undone == ["first"]
    assert blocker.cancelled


async def test_a_cancel_request_is_honoured_when_the_run_suspends_first(
    reopen: StorageFactory, clock: FakeClock
) -> None:
    blocker = Blocker()
    flow = create_workflow("quick-then-wait").step("work", blocker).wait_for_signal("go")
    async with (
        # The driver looks at storage only when woken: its own run suspending wakes it.
        FluxEngine(storage=reopen(), clock=clock, poll_interval=60, workflows=[flow]) as driver,
        FluxEngine(storage=reopen(), clock=clock, poll_interval=0.01) as other,
        driver.worker(),
    ):
        run_id = await other.start(flow)
        driver.notify()
        await blocker.started.wait()
        asked = await other.cancel(run_id, reason="too late to stop the step")
        blocker.release.set()  # the step ends and the run suspends before the request is seen
        result = await driver.wait_result(run_id, timeout=10)

    assert asked.status == RunStatus.RUNNING
    assert result.status == RunStatus.CANCELLED
    assert result.error is not None and result.error.message == "too late to stop the step"
    assert result.outputs == {"work": "released"}


async def test_cancel_from_an_engine_that_does_not_know_the_workflow(
    reopen: StorageFactory, clock: FakeClock
) -> None:
    flow = create_workflow("approval").wait_for_signal("approve")
    async with FluxEngine(storage=reopen(), clock=clock) as first:
        run = await first.execute(flow)

    async with FluxEngine(storage=reopen(), clock=clock) as stranger:
        with pytest.raises(WorkflowNotRegisteredError, match=r"engine\.register"):
            await stranger.cancel(run.id)
        stored = await stranger.storage.load(run.id)

    assert stored is not None and stored.status == RunStatus.SUSPENDED
    assert stored.lease_expires_at is None  # no claim left behind: workers can still take it
    async with FluxEngine(storage=reopen(), clock=clock, workflows=[flow]) as knowing:
        assert (await knowing.cancel(run.id)).status == RunStatus.CANCELLED
