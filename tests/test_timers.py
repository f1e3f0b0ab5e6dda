"""Durable timers: sleep, sleep_until and retry delays stored as due times, continued by the
process that called ``execute`` or, for runs from ``start`` (or whose process died), by a worker."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from suspending import suspended_run

from flux import (
    FluxEngine,
    InvalidStepError,
    RetryAfter,
    RetryPolicy,
    RunStatus,
    StepContext,
    StepStatus,
    Storage,
    create_workflow,
)
from flux.testing import EventRecorder, FakeClock

StorageFactory = Callable[[], Storage]


def when(engine: FluxEngine, event: str) -> asyncio.Event:
    """An asyncio.Event set the first time ``engine`` emits ``event``."""
    seen = asyncio.Event()
    engine.on(event, lambda _: seen.set())
    return seen


# --- sleep --------------------------------------------------------------------------------


async def test_a_seven_day_sleep_completes_at_once_when_the_fake_clock_moves(
    engine: FluxEngine, clock: FakeClock
) -> None:
    start = clock.now()
    flow = create_workflow("week").sleep("wait-a-week", timedelta(days=7)).step("done", lambda ctx: "done")
    suspended = when(engine, "workflow_suspend")

    async with engine.worker():
        run_id = await engine.start(flow)
        await suspended.wait()
        sleeping = await engine.get(run_id)
        await clock.advance(timedelta(days=7))
        result = await engine.wait_result(run_id, timeout=10)

    assert sleeping.status == RunStatus.SUSPENDED
    assert sleeping.history[-1].wake_at == start + timedelta(days=7)
    assert result.status == RunStatus.COMPLETED
    assert result.outputs == {"done": "done"}
    assert result.finished_at == start + timedelta(days=7)


async def test_a_sleep_does_not_end_before_its_time(engine: FluxEngine, clock: FakeClock) -> None:
    flow = create_workflow("hour").sleep("nap", 3600).step("done", lambda ctx: "done")
    run = await suspended_run(engine, flow)

    async with engine.worker():
        await clock.advance(3599)
        early = await engine.get(run.id)
        await clock.advance(1)
        result = await engine.wait_result(run.id, timeout=10)

    assert early.status == RunStatus.SUSPENDED
    assert result.status == RunStatus.COMPLETED


async def test_a_short_sleep_waits_in_memory_without_suspending(engine: FluxEngine, clock: FakeClock) -> None:
    recorder = EventRecorder()
    engine.on("*", recorder)
    flow = create_workflow("blink").sleep("blink", 2).step("done", lambda ctx: "done")

    result = await engine.execute(flow)

    assert result.status == RunStatus.COMPLETED
    assert clock.slept == [2.0]
    assert "workflow_suspend" not in recorder.names
    assert result.history[0].status == StepStatus.COMPLETED


async def test_sleep_until_waits_for_the_time_the_function_returns(
    engine: FluxEngine, clock: FakeClock
) -> None:
    start = clock.now()

    def next_monday_9am(ctx: StepContext[Any]) -> datetime:
        return datetime.fromisoformat(ctx.input["at"])

    flow = (
        create_workflow("remind")
        .sleep_until("until-monday", next_monday_9am)
        .step("remind", lambda ctx: "sent")
    )
    due = start + timedelta(days=3, hours=9)
    run = await suspended_run(engine, flow, {"at": due.isoformat()})
    assert run.history[-1].wake_at == due

    async with engine.worker():
        await clock.advance(due - start)
        result = await engine.wait_result(run.id, timeout=10)

    assert result.outputs == {"remind": "sent"}
    assert result.finished_at == due


async def test_sleep_until_a_time_in_the_past_does_not_wait(engine: FluxEngine) -> None:
    flow = create_workflow("late").sleep_until("past", lambda ctx: datetime(2000, 1, 1, tzinfo=UTC))
    assert (await engine.execute(flow)).status == RunStatus.COMPLETED


async def test_sleep_until_must_return_an_aware_datetime(engine: FluxEngine) -> None:
    flow = create_workflow("naive").sleep_until("naive", lambda ctx: datetime(2040, 1, 1))

    result = await engine.execute(flow)

    assert result.status == RunStatus.FAILED
    assert result.error is not None
    assert "must return a timezone-aware datetime" in result.error.message


@pytest.mark.parametrize("bad", ["10", -1, None])
def test_sleep_rejects_bad_durations(bad: Any) -> None:
    with pytest.raises(InvalidStepError):
        create_workflow("bad").sleep("nap", bad)


async def test_a_sleeping_run_survives_an_engine_restart(reopen: StorageFactory, clock: FakeClock) -> None:
    start = clock.now()
    flow = create_workflow("nightly").sleep("night", timedelta(hours=8)).step("morning", lambda ctx: "up")
    async with FluxEngine(storage=reopen(), clock=clock) as first:
        run = await suspended_run(first, flow)
    assert run.status == RunStatus.SUSPENDED

    async with FluxEngine(storage=reopen(), clock=clock, workflows=[flow]) as second:
        assert await second.storage.next_wake() == start + timedelta(hours=8)
        async with second.worker():
            await clock.advance(timedelta(hours=8))
            result = await second.wait_result(run.id, timeout=10)

    assert result.outputs == {"morning": "up"}


async def test_many_sleeping_runs_wake_in_due_order(engine: FluxEngine, clock: FakeClock) -> None:
    order: list[int] = []

    async def note(ctx: StepContext[Any]) -> None:
        # async: a sync step would run on a thread, racing the fake time moved below
        order.append(ctx.input["n"])

    flow = (
        create_workflow("staggered")
        .sleep_until("until", lambda ctx: clock.now() + timedelta(minutes=ctx.input["n"]))
        .step("note", note)
    )
    runs = [await suspended_run(engine, flow, {"n": n}) for n in (30, 10, 20)]

    async with engine.worker(concurrency=1):
        for _ in range(3):
            await clock.advance(timedelta(minutes=10))
        results = [await engine.wait_result(run.id, timeout=10) for run in runs]

    assert [r.status for r in results] == [RunStatus.COMPLETED] * 3
    assert order == [10, 20, 30]


# --- retry delays -------------------------------------------------------------------------


def flaky(failures: int, calls: list[int]) -> Callable[[StepContext[Any]], str]:
    def charge(ctx: StepContext[Any]) -> str:
        calls.append(ctx.attempt)
        if ctx.attempt <= failures:
            raise ConnectionError(f"gateway down (attempt {ctx.attempt})")
        return "charged"

    return charge


slow_retries = RetryPolicy(max_attempts=4, initial_delay=60, backoff_multiplier=2, max_delay=3600, jitter=0)


async def test_a_long_retry_delay_is_stored_as_a_due_time(engine: FluxEngine, clock: FakeClock) -> None:
    start = clock.now()
    calls: list[int] = []
    flow = create_workflow("pay").step("charge", flaky(2, calls), retry=slow_retries)

    run = await suspended_run(engine, flow)

    assert run.status == RunStatus.SUSPENDED
    backing_off = run.history[-1]
    assert backing_off.status == StepStatus.SUSPENDED
    assert backing_off.wake_at == clock.now() + timedelta(seconds=60)
    assert backing_off.error is not None and "attempt 1" in backing_off.error.message
    assert calls == [1]
    assert clock.slept == []  # nothing waited in memory

    suspended: asyncio.Queue[object] = asyncio.Queue()
    engine.on("workflow_suspend", suspended.put_nowait)
    async with engine.worker():
        await clock.advance(60)
        await suspended.get()  # attempt 2 failed and backs off again
        second = await engine.get(run.id)
        await clock.advance(120)
        result = await engine.wait_result(run.id, timeout=10)

    assert second.status == RunStatus.SUSPENDED
    assert second.history[-1].wake_at == start + timedelta(seconds=180)
    assert result.status == RunStatus.COMPLETED
    assert calls == [1, 2, 3]
    assert result.history[-1].attempts == 3


async def test_a_retry_is_not_run_before_its_due_time(engine: FluxEngine, clock: FakeClock) -> None:
    calls: list[int] = []
    flow = create_workflow("pay").step("charge", flaky(1, calls), retry=slow_retries)
    run = await suspended_run(engine, flow)

    resumed = await engine.resume(run.id)  # too early: the run stays suspended

    assert resumed.status == RunStatus.SUSPENDED
    assert calls == [1]


async def test_retry_after_longer_than_durable_after_is_stored(engine: FluxEngine, clock: FakeClock) -> None:
    calls: list[int] = []

    def rate_limited(ctx: StepContext[Any]) -> str:
        calls.append(ctx.attempt)
        if ctx.attempt == 1:
            raise RetryAfter(900, "429 from the API")
        return "ok"

    run = await suspended_run(engine, create_workflow("api").step("call", rate_limited))
    assert run.history[-1].wake_at == clock.now() + timedelta(seconds=900)

    async with engine.worker():
        await clock.advance(900)
        result = await engine.wait_result(run.id, timeout=10)
    assert result.outputs == {"call": "ok"}


async def test_short_retry_delays_wait_in_memory(engine: FluxEngine, clock: FakeClock) -> None:
    calls: list[int] = []
    fast = RetryPolicy(max_attempts=3, initial_delay=1, jitter=0)
    recorder = EventRecorder()
    engine.on("*", recorder)

    result = await engine.execute(create_workflow("pay").step("charge", flaky(2, calls), retry=fast))

    assert result.status == RunStatus.COMPLETED
    assert clock.slept == [1.0, 2.0]
    assert "workflow_suspend" not in recorder.names


async def test_a_backing_off_run_survives_an_engine_restart(reopen: StorageFactory, clock: FakeClock) -> None:
    calls: list[int] = []
    flow = create_workflow("pay").step("charge", flaky(1, calls), retry=slow_retries)
    async with FluxEngine(storage=reopen(), clock=clock) as first:
        run = await suspended_run(first, flow)
    assert run.status == RunStatus.SUSPENDED

    async with FluxEngine(storage=reopen(), clock=clock, workflows=[flow]) as second, second.worker():
        await clock.advance(60)
        result = await second.wait_result(run.id, timeout=10)

    assert result.status == RunStatus.COMPLETED
    assert calls == [1, 2]
    assert [r.attempts for r in result.history] == [2]


# --- execute keeps a run that waits on time -----------------------------------------------------


async def test_execute_keeps_a_run_through_a_long_retry_delay(engine: FluxEngine, clock: FakeClock) -> None:
    """The README's example as a new user tried it: ``charge`` fails four times with
    ``retries=5``; the 4th delay (8 s) is longer than ``durable_after`` (5 s). The run used to
    suspend and ``execute`` returned ``suspended`` (only a worker would ever continue it). Now
    the delay is still stored as a due time, and ``execute`` continues the run and returns it
    completed."""
    calls: list[int] = []
    policy = RetryPolicy(initial_delay=1, backoff_multiplier=2, jitter=0)
    recorder = EventRecorder()
    engine.on("*", recorder)
    flow = create_workflow("order").step("charge", flaky(4, calls), retries=5, retry=policy)

    result = await engine.execute(flow)

    assert result.status == RunStatus.COMPLETED
    assert calls == [1, 2, 3, 4, 5]
    assert clock.slept == [1.0, 2.0, 4.0, 8.0]
    assert "workflow_suspend" in recorder.names and "workflow_resume" in recorder.names


async def test_execute_keeps_a_sleeping_run_until_it_ends(engine: FluxEngine, clock: FakeClock) -> None:
    """A one-hour ``.sleep`` (stored as a due time) no longer makes ``execute`` return
    ``suspended``: it returns the completed run, an hour later on the run's clock."""
    start = clock.now()
    flow = create_workflow("hour").sleep("nap", 3600).step("done", lambda ctx: "done")

    result = await engine.execute(flow)

    assert result.status == RunStatus.COMPLETED
    assert result.finished_at == start + timedelta(hours=1)


async def test_execute_still_returns_a_run_waiting_for_a_signal(engine: FluxEngine) -> None:
    """A wait for something from outside the process (a signal) still ends ``execute``."""
    flow = create_workflow("approval").sleep("nap", 600).wait_for_signal("approve", timeout=3600)
    result = await engine.execute(flow)
    assert result.status == RunStatus.SUSPENDED
    assert result.history[-1].waiting_for == "approve"


async def test_the_engines_own_worker_leaves_a_kept_run_alone(storage: Storage) -> None:
    """Race: ``execute`` keeps a run sleeping on a stored retry delay while this engine's
    worker runs; when the delay is due both could drive it (same owner). Only ``execute``
    does: the step is called once per attempt."""
    clock = FakeClock(auto_advance=False)
    calls: list[int] = []
    flow = create_workflow("pay").step("charge", flaky(1, calls), retry=slow_retries)
    async with FluxEngine(storage=storage, clock=clock) as engine, engine.worker():
        suspended = when(engine, "workflow_suspend")
        running = asyncio.create_task(engine.execute(flow))
        await suspended.wait()
        await clock.wait_for_timers()  # execute sleeps until the stored due time
        await clock.advance(60)
        result = await running
    assert result.status == RunStatus.COMPLETED
    assert calls == [1, 2]


async def test_cancelling_a_kept_run_ends_its_execute(engine: FluxEngine) -> None:
    """``cancel`` of a run that ``execute`` keeps in a ten-minute backoff: ``execute`` returns
    the cancelled run at once instead of sleeping out the delay."""
    clock = FakeClock(auto_advance=False)
    async with FluxEngine(storage=engine.storage, clock=clock) as own:
        flow = create_workflow("pay").step("charge", flaky(9, []), retry=slow_retries)
        suspended = when(own, "workflow_suspend")
        running = asyncio.create_task(own.execute(flow))
        await suspended.wait()
        run_id = (await own.list("pay"))[0].id
        cancelled = await own.cancel(run_id, "customer gave up")
        result = await running
    assert cancelled.status == result.status == RunStatus.CANCELLED


async def test_a_kept_run_whose_process_died_is_continued_by_recover(
    reopen: StorageFactory, clock: FakeClock
) -> None:
    """The process keeping a run in a stored 60 s backoff dies (its execute never returns).
    ``recover()`` used to leave suspended runs alone; now it continues runs whose due time has
    passed."""
    calls: list[int] = []
    flow = create_workflow("pay").step("charge", flaky(1, calls), retry=slow_retries)
    async with FluxEngine(storage=reopen(), clock=clock) as first:
        run = await suspended_run(first, flow)  # stored, and nothing keeps it any more
    async with FluxEngine(storage=reopen(), clock=clock, workflows=[flow]) as second:
        assert await second.recover() == []  # not due yet
        await clock.advance(60)
        recovered = await second.recover()
    assert [(r.id, r.status) for r in recovered] == [(run.id, RunStatus.COMPLETED)]
    assert calls == [1, 2]
