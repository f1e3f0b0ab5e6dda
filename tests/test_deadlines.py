"""Deadlines: a run unfinished at its deadline is cancelled, running or suspended."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from flux import (
    FluxEngine,
    InvalidStepError,
    PlanError,
    RunStatus,
    StepContext,
    StepStatus,
    Storage,
    create_workflow,
)
from flux.testing import EventRecorder, FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def engine(storage: Storage, clock: FakeClock) -> AsyncIterator[FluxEngine]:
    async with FluxEngine(storage=storage, clock=clock) as engine:
        yield engine


def hang(started: asyncio.Event) -> Any:
    async def step(ctx: StepContext[Any]) -> None:
        started.set()
        await asyncio.Event().wait()

    return step


async def test_a_running_step_is_cancelled_at_the_workflow_deadline(
    engine: FluxEngine, clock: FakeClock
) -> None:
    recorder = EventRecorder()
    engine.on("*", recorder)
    started = asyncio.Event()
    flow = create_workflow("bounded").step("hang", hang(started), timeout=3600).deadline(60)

    executing = asyncio.create_task(engine.execute(flow))
    await started.wait()
    await clock.advance(60)
    result = await executing

    assert result.status == RunStatus.CANCELLED
    assert result.error is not None and result.error.message == "deadline exceeded"
    assert result.history[-1].status == StepStatus.FAILED
    assert [e.reason for e in recorder.of("workflow_cancel")] == ["deadline exceeded"]


async def test_execute_deadline_overrides_the_workflow_one(engine: FluxEngine, clock: FakeClock) -> None:
    start = clock.now()
    started = asyncio.Event()
    flow = create_workflow("bounded").step("hang", hang(started), timeout=3600).deadline(timedelta(days=1))

    executing = asyncio.create_task(engine.execute(flow, deadline=timedelta(minutes=5)))
    await started.wait()
    await clock.advance(timedelta(minutes=5))
    result = await executing

    assert result.status == RunStatus.CANCELLED
    assert result.finished_at == start + timedelta(minutes=5)


async def test_a_run_waiting_for_a_signal_is_cancelled_at_its_deadline(
    engine: FluxEngine, clock: FakeClock
) -> None:
    start = clock.now()
    undone: list[str] = []
    flow = (
        create_workflow("approval")
        .step("reserve", lambda ctx: "r", compensate=lambda ctx: undone.append("reserve"))
        .wait_for_signal("approve")
        .deadline(timedelta(hours=2))
    )
    run = await engine.execute(flow)
    assert run.status == RunStatus.SUSPENDED
    assert (await engine.storage.next_wake()) == start + timedelta(hours=2)

    async with engine.worker():
        await clock.advance(timedelta(hours=1))
        still = await engine.get(run.id)
        await clock.advance(timedelta(hours=1))
        result = await engine.wait_result(run.id, timeout=10)

    assert still.status == RunStatus.SUSPENDED
    assert result.status == RunStatus.CANCELLED
    assert result.error is not None and result.error.message == "deadline exceeded"
    assert undone == []  # a deadline cancels without compensating


async def test_a_sleep_longer_than_the_deadline_ends_at_the_deadline(
    engine: FluxEngine, clock: FakeClock
) -> None:
    start = clock.now()
    calls: list[str] = []
    flow = (
        create_workflow("overslept")
        .sleep("nap", timedelta(days=30))
        .step("after", lambda ctx: calls.append("x"))
    )

    run = await engine.execute(flow, deadline=timedelta(days=1))
    async with engine.worker():
        await clock.advance(timedelta(days=1))
        result = await engine.wait_result(run.id, timeout=10)

    assert result.status == RunStatus.CANCELLED
    assert result.finished_at == start + timedelta(days=1)
    assert calls == []


async def test_a_pending_run_past_its_deadline_is_cancelled_when_a_worker_takes_it(
    engine: FluxEngine, clock: FakeClock
) -> None:
    calls: list[str] = []
    run_id = await engine.start(
        create_workflow("late").step("work", lambda ctx: calls.append("w")), deadline=10
    )
    await clock.advance(11)

    async with engine.worker():
        result = await engine.wait_result(run_id, timeout=10)

    assert result.status == RunStatus.CANCELLED
    assert calls == []


async def test_a_run_that_finishes_in_time_completes(engine: FluxEngine, clock: FakeClock) -> None:
    flow = create_workflow("prompt").sleep("short-nap", timedelta(hours=1)).step("done", lambda ctx: "ok")
    run = await engine.execute(flow.deadline(timedelta(hours=2)))

    async with engine.worker():
        await clock.advance(timedelta(hours=1))
        result = await engine.wait_result(run.id, timeout=10)
        await clock.advance(timedelta(hours=5))

    assert result.status == RunStatus.COMPLETED
    assert (await engine.get(run.id)).status == RunStatus.COMPLETED


@pytest.mark.parametrize("bad", [0, -5, timedelta(0)])
async def test_deadlines_must_be_positive(engine: FluxEngine, bad: Any) -> None:
    flow = create_workflow("x").step("x", lambda ctx: None)
    with pytest.raises(ValueError, match="positive"):
        await engine.execute(flow, deadline=bad)
    with pytest.raises((PlanError, InvalidStepError)):
        flow.deadline(bad).build()
