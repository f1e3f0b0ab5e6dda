"""Parallel groups: branches run side by side, each its steps in order; failure, retries,
compensation across branches, suspension inside a branch, crash and resume.

No test sleeps for real: branches wait on asyncio events the test (or an event subscriber)
sets, and retry delays go through a FakeClock.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from flux import FluxEngine, StepContext, Workflow, WorkflowBuilder, create_workflow
from flux.storage import Storage
from flux.testing import EventRecorder, FakeClock


class Crash(BaseException):
    """Stands for the process dying in the middle of a step."""


def echo(ctx: StepContext[Any]) -> str:
    return f"{ctx.step}-out"


async def aecho(ctx: StepContext[Any]) -> str:
    await asyncio.sleep(0)
    return f"{ctx.step}-out"


def branch(name: str, *steps: str) -> WorkflowBuilder[Any]:
    builder = create_workflow(name)
    for step in steps:
        builder = builder.step(step, aecho)
    return builder


def statuses(history: Any) -> dict[str, str]:
    return {record.step: str(record.status) for record in history}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def engine(storage: Storage, clock: FakeClock) -> FluxEngine:
    return FluxEngine(storage, clock=clock)


async def test_branches_run_their_steps_in_order_and_the_group_joins(engine: FluxEngine) -> None:
    recorder = EventRecorder()
    engine.on("*", recorder)
    wf = (
        create_workflow("fan")
        .step("start", echo)
        .parallel("group", branch("a", "a1", "a2"), branch("b", "b1"))
        .step("after", lambda ctx: sorted(ctx.outputs))
        .build()
    )
    result = await engine.execute(wf)

    assert result.status == "completed"
    assert result.outputs["a1"] == "a1-out" and result.outputs["a2"] == "a2-out"
    assert result.outputs["group"] == {"a": "a2-out", "b": "b1-out"}
    assert result.outputs["after"] == ["a1", "a2", "b1", "group", "start"]
    assert [r.step for r in result.history][:2] == ["start", "group"]
    assert set(statuses(result.history).values()) == {"completed"}
    starts, completes = recorder.steps("step_start"), recorder.steps("step_complete")
    assert starts.index("a1") < starts.index("a2") and completes.index("a1") < starts.index("a2")
    assert completes[-2:] == ["group", "after"]  # the group ends after all its branches
    assert (await engine.get(result.id)).outputs == result.outputs


async def test_a_slow_branch_never_holds_back_an_unrelated_one(engine: FluxEngine) -> None:
    gate = asyncio.Event()
    order: list[str] = []

    async def slow(ctx: StepContext[Any]) -> str:
        await gate.wait()  # opened only once the other branch has finished all its steps
        order.append(ctx.step)
        return "slow"

    async def fast(ctx: StepContext[Any]) -> str:
        order.append(ctx.step)
        return "fast"

    engine.on("step_complete", lambda event: gate.set() if event.step == "fast-3" else None)
    wf = create_workflow("w").parallel(
        "group",
        create_workflow("slow").step("slow-1", slow),
        create_workflow("fast").step("fast-1", fast).step("fast-2", fast).step("fast-3", fast),
    )
    result = await engine.execute(wf)
    assert result.status == "completed"
    assert order == ["fast-1", "fast-2", "fast-3", "slow-1"]


async def test_fail_fast_cancels_the_other_branches(engine: FluxEngine) -> None:
    never = asyncio.Event()
    cancelled: list[str] = []

    async def hangs(ctx: StepContext[Any]) -> None:
        try:
            await never.wait()
        except asyncio.CancelledError:
            cancelled.append(ctx.step)
            raise

    def boom(ctx: StepContext[Any]) -> None:
        raise ValueError("card declined")

    wf = create_workflow("w").parallel(
        "group",
        create_workflow("a").step("waits", hangs),
        create_workflow("b").step("fails", boom),
    )
    result = await engine.execute(wf)

    assert result.status == "failed"
    assert result.error is not None
    assert (result.error.step, result.error.type, result.error.message) == (
        "fails",
        "ValueError",
        "card declined",
    )
    assert cancelled == ["waits"]
    history = {r.step: r for r in result.history}
    assert history["group"].status == "failed"
    assert history["waits"].status == "failed" and history["waits"].error is not None
    assert history["waits"].error.type == "Cancelled"


async def test_without_fail_fast_the_other_branches_finish_before_the_group_fails(engine: FluxEngine) -> None:
    opened = asyncio.Event()

    async def waits_for_the_failure(ctx: StepContext[Any]) -> str:
        await opened.wait()
        return "finished anyway"

    def boom(ctx: StepContext[Any]) -> None:
        raise ValueError("nope")

    engine.on("step_error", lambda event: opened.set())
    wf = create_workflow("w").parallel(
        "group",
        create_workflow("a").step("survivor", waits_for_the_failure).step("survivor-2", echo),
        create_workflow("b").step("fails", boom),
        fail_fast=False,
    )
    result = await engine.execute(wf)
    assert result.status == "failed"
    assert result.error is not None and result.error.step == "fails"
    assert statuses(result.history) == {
        "group": "failed",
        "survivor": "completed",
        "survivor-2": "completed",
        "fails": "failed",
    }


async def test_a_step_inside_a_branch_is_retried(engine: FluxEngine, clock: FakeClock) -> None:
    attempts: Counter[str] = Counter()

    def flaky(ctx: StepContext[Any]) -> int:
        attempts[ctx.step] += 1
        if ctx.attempt < 3:
            raise ConnectionError("try again")
        return ctx.attempt

    recorder = EventRecorder()
    engine.on("step_retry", recorder)
    wf = create_workflow("w").parallel(
        "group", create_workflow("a").step("flaky", flaky, retries=3), branch("b", "steady")
    )
    result = await engine.execute(wf)
    assert result.status == "completed"
    assert result.outputs["flaky"] == 3
    assert attempts == {"flaky": 3}
    assert recorder.steps("step_retry") == ["flaky", "flaky"]
    assert {r.step: r.attempts for r in result.history}["flaky"] == 3
    assert len(clock.slept) == 2  # the backoff went through the clock


async def test_every_completed_branch_step_is_compensated_newest_first(engine: FluxEngine) -> None:
    undone: list[str] = []
    all_done = asyncio.Event()
    finished: set[str] = set()

    def undo(ctx: StepContext[Any]) -> None:
        undone.append(ctx.step)

    def note(event: Any) -> None:
        finished.add(event.step)
        if {"a1", "a2", "b1"} <= finished:
            all_done.set()

    async def fails_last(ctx: StepContext[Any]) -> None:
        await all_done.wait()
        raise ValueError("out of stock")

    engine.on("step_complete", note)
    wf = (
        create_workflow("trip")
        .step("reserve", echo, compensate=undo)
        .parallel(
            "book",
            create_workflow("flights").step("a1", aecho, compensate=undo).step("a2", aecho, compensate=undo),
            create_workflow("hotels").step("b1", aecho, compensate=undo),
            create_workflow("cars").step("c1", fails_last, compensate=undo),
        )
        .build()
    )
    result = await engine.execute(wf)

    assert result.status == "rolled_back"
    assert result.error is not None and result.error.step == "c1"
    completed = [r.step for r in result.history if r.status == "compensated"]
    assert sorted(undone) == ["a1", "a2", "b1", "reserve"]
    assert undone == list(reversed(completed))  # newest first, in the history's order
    assert undone[-1] == "reserve"
    assert undone.index("a2") < undone.index("a1")


async def test_concurrency_caps_the_branches_running_at_once(engine: FluxEngine) -> None:
    running, peak, finished, total = 0, 0, 0, 6
    changed = asyncio.Condition()

    async def counted(ctx: StepContext[Any]) -> None:
        nonlocal running, peak, finished
        async with changed:
            running += 1
            peak = max(peak, running)
            changed.notify_all()
            # Hold on until a second branch runs beside this one (or none is left to come).
            await changed.wait_for(lambda: running >= min(2, total - finished))
            running -= 1
            finished += 1
            changed.notify_all()

    branches = [create_workflow(f"b{i}").step(f"s{i}", counted) for i in range(total)]
    result = await engine.execute(create_workflow("w").parallel("group", *branches, concurrency=2))
    assert result.status == "completed"
    assert peak == 2
    assert finished == total


async def test_a_branch_that_waits_suspends_the_run_once_the_others_are_done(engine: FluxEngine) -> None:
    wf = (
        create_workflow("approval")
        .parallel(
            "group",
            create_workflow("human").wait_for_signal("approve").step("after-approval", echo),
            branch("machine", "m1", "m2"),
        )
        .step("ship", echo)
        .build()
    )
    suspended = await engine.execute(wf)
    assert suspended.status == "suspended"
    assert statuses(suspended.history) == {
        "group": "running",
        "approve": "suspended",
        "m1": "completed",
        "m2": "completed",
    }

    await engine.signal(suspended.id, "approve", {"by": "ada"})
    result = await engine.resume(suspended.id)
    assert result.status == "completed"
    assert result.outputs["approve"] == {"by": "ada"}
    assert result.outputs["group"] == {"human": "after-approval-out", "machine": "m2-out"}
    assert [r.step for r in result.history].count("m1") == 1  # finished branches are not run again


async def test_a_crash_inside_a_group_resumes_only_the_step_in_flight(
    storage: Storage, clock: FakeClock
) -> None:
    calls: Counter[str] = Counter()
    other_done = asyncio.Event()
    crash = True

    async def step(ctx: StepContext[Any]) -> str:
        nonlocal crash
        calls[ctx.step] += 1
        if ctx.step == "a2" and crash:
            await other_done.wait()
            crash = False
            raise Crash()
        ctx.data[ctx.step] = True
        return ctx.step

    def workflow() -> Workflow[Any]:
        return (
            create_workflow("crashy")
            .parallel(
                "group",
                create_workflow("a").step("a1", step).step("a2", step),
                create_workflow("b").step("b1", step).step("b2", step),
            )
            .step("end", step)
            .build()
        )

    first = FluxEngine(storage, clock=clock)
    first.on("step_complete", lambda event: other_done.set() if event.step == "b2" else None)
    with pytest.raises(Crash):
        await first.execute(workflow(), run_id="r1")
    stranded = await first.get("r1")
    assert stranded.status == "running"
    assert statuses(stranded.history) == {
        "group": "running",
        "a1": "completed",
        "b1": "completed",
        "a2": "running",
        "b2": "completed",
    }

    await clock.advance(timedelta(seconds=31))  # the first "process" stopped renewing its lease
    second = FluxEngine(storage, clock=clock, workflows=[workflow()])
    result = await second.resume("r1")
    assert result.status == "completed"
    assert calls == {"a1": 1, "a2": 2, "b1": 1, "b2": 1, "end": 1}
    assert result.data == {"a1": True, "a2": True, "b1": True, "b2": True, "end": True}
    assert result.outputs["group"] == {"a": "a2", "b": "b2"}


async def test_a_signal_wakes_its_branch_while_a_sibling_branch_is_still_busy(engine: FluxEngine) -> None:
    """The waiting branch goes on as soon as its signal comes, not when the slow branch ends."""
    slow_started, slow_release, after_wait = asyncio.Event(), asyncio.Event(), asyncio.Event()
    waiting = asyncio.Event()

    async def slow(ctx: StepContext[Any]) -> str:
        slow_started.set()
        await slow_release.wait()
        return "slow-done"

    def approved(ctx: StepContext[Any]) -> Any:
        after_wait.set()
        return ctx.outputs["approval"]

    engine.on("step_start", lambda ev: waiting.set() if ev.step == "approval" else None)
    wf = (
        create_workflow("wake")
        .parallel(
            "group",
            create_workflow("waits").wait_for_signal("approval").step("use-approval", approved),
            create_workflow("slow").step("slow-step", slow),
        )
        .build()
    )
    run = asyncio.create_task(engine.execute(wf, run_id="w1"))
    await slow_started.wait()
    await waiting.wait()
    await engine.signal("w1", "approval", {"by": "ada"})
    # A timeout here means the branch stayed asleep until the slow branch ended.
    await asyncio.wait_for(after_wait.wait(), timeout=10)
    assert not slow_release.is_set()
    assert not run.done()
    slow_release.set()
    result = await run
    assert result.status == "completed"
    assert result.outputs["use-approval"] == {"by": "ada"}
    assert result.outputs["slow-step"] == "slow-done"


async def test_a_waiting_branch_still_suspends_the_run_once_its_siblings_are_done(engine: FluxEngine) -> None:
    wf = (
        create_workflow("idle")
        .parallel(
            "group",
            create_workflow("waits").wait_for_signal("approval"),
            create_workflow("quick").step("quick-step", aecho),
        )
        .build()
    )
    result = await engine.execute(wf, run_id="i1")
    assert result.status == "suspended"
    assert statuses(result.history)["quick-step"] == "completed"
    await engine.signal("i1", "approval", True)
    resumed = await engine.resume("i1")
    assert resumed.status == "completed"
    assert resumed.outputs["approval"] is True
