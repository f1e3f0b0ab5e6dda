"""Child workflows: ctx.run_child and .child steps; a durable child run linked to its parent,
re-attached on resume, waking its parent when it ends, cancelled with its parent."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from flux import ChildWorkflowError, FluxEngine, RunData, RunResult, StepContext, Workflow, create_workflow
from flux.storage import Storage
from flux.testing import FakeClock


class Crash(BaseException):
    """Stands for the process dying in the middle of a step."""


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def engine(storage: Storage, clock: FakeClock) -> FluxEngine:
    return FluxEngine(storage, clock=clock)


calls: Counter[str] = Counter()


def doubled(ctx: StepContext[Any]) -> int:
    calls["child"] += 1
    return int(ctx.input["x"]) * 2


CHILD = create_workflow("child").step("double", doubled).build()
WAITING_CHILD = create_workflow("waiting-child").wait_for_signal("go").step("double", doubled).build()


def failing(ctx: StepContext[Any]) -> None:
    raise ValueError("child broke")


@pytest.fixture(autouse=True)
def reset_calls() -> None:
    calls.clear()


async def test_run_child_returns_the_child_result_and_links_the_runs(engine: FluxEngine) -> None:
    seen: list[RunResult] = []

    async def parent(ctx: StepContext[Any]) -> int:
        child = await ctx.run_child(CHILD, {"x": 21})
        seen.append(child)
        return int(child.outputs["double"])

    result = await engine.execute(create_workflow("parent").step("spawn", parent), run_id="p1")
    assert result.status == "completed" and result.outputs["spawn"] == 42
    (child,) = seen
    assert child.id == "p1/spawn#0" and child.workflow == "child" and child.status == "completed"
    assert result.history[0].actions["flux:child"] == child.id  # the parent's record names its child
    stored = await engine.get(child.id)
    assert stored.status == "completed" and stored.input == {"x": 21}


async def test_a_child_step_outputs_the_child_outcome(engine: FluxEngine) -> None:
    wf = create_workflow("parent").child("kid", CHILD, input=lambda ctx: {"x": 5}).build()
    result = await engine.execute(wf, run_id="p1")
    assert result.outputs["kid"] == {"run_id": "p1/kid#0", "status": "completed", "outputs": {"double": 10}}


async def test_a_failed_child_raises_child_workflow_error_once(engine: FluxEngine) -> None:
    errors: list[ChildWorkflowError] = []
    child = create_workflow("bad-child").step("fail", failing).build()

    async def parent(ctx: StepContext[Any]) -> None:
        try:
            await ctx.run_child(child)
        except ChildWorkflowError as error:
            errors.append(error)
            raise

    result = await engine.execute(create_workflow("parent").step("spawn", parent, retries=3))
    assert result.status == "failed"
    assert result.error is not None and result.error.type == "ChildWorkflowError"
    (error,) = errors  # not retried: the same finished child would fail it again
    assert error.status == "failed"
    assert error.error is not None and (error.error.type, error.error.message) == (
        "ValueError",
        "child broke",
    )
    assert "ended failed: ValueError: child broke" in str(error)


async def test_a_suspended_child_suspends_the_parent_until_it_ends(engine: FluxEngine) -> None:
    wf = (
        create_workflow("parent")
        .child("kid", WAITING_CHILD, input=lambda ctx: {"x": 4})
        .step("after", doubled_after)
    )
    parent = await engine.execute(wf, run_id="p1")
    assert parent.status == "suspended"
    child_id = "p1/kid#0"
    assert (await engine.get(child_id)).status == "suspended"

    await engine.signal(child_id, "go")
    child = await engine.resume(child_id)
    assert child.status == "completed"
    stored = await engine.storage.load("p1")
    assert stored is not None and stored.wake_at is not None  # the child's end made its parent due

    result = await engine.resume("p1")
    assert result.status == "completed"
    assert result.outputs["kid"]["outputs"] == {"double": 8}
    assert calls["child"] == 1  # one child, never a second one
    assert len(await engine.list(name="waiting-child")) == 1


def doubled_after(ctx: StepContext[Any]) -> int:
    return int(ctx.outputs["kid"]["outputs"]["double"]) * 2


async def test_a_worker_wakes_the_parent_when_its_child_ends(engine: FluxEngine) -> None:
    wf = create_workflow("parent").child("kid", WAITING_CHILD, input=lambda ctx: {"x": 1}).build()
    engine.register(wf)
    engine.register(WAITING_CHILD)
    child_waits = asyncio.Event()
    engine.on("workflow_suspend", lambda event: child_waits.set() if event.run_id == "p1/kid#0" else None)
    async with engine.worker(concurrency=4):
        parent_id = await engine.start(wf, run_id="p1")
        async with asyncio.timeout(10):
            await child_waits.wait()
        await engine.signal("p1/kid#0", "go")  # the worker resumes the child, whose end wakes the parent
        result = await engine.wait_result(parent_id, timeout=10)
    assert result.status == "completed"
    assert result.outputs["kid"]["outputs"] == {"double": 2}


async def test_a_resumed_parent_re_attaches_to_its_child(storage: Storage, clock: FakeClock) -> None:
    crash = True

    async def parent(ctx: StepContext[Any]) -> int:
        nonlocal crash
        child = await ctx.run_child(CHILD, {"x": 3})
        if crash:  # the parent dies after the child finished, before its own step did
            crash = False
            raise Crash()
        return int(child.outputs["double"])

    def workflow() -> Workflow[Any]:
        return create_workflow("parent").step("spawn", parent).build()

    with pytest.raises(Crash):
        await FluxEngine(storage, clock=clock).execute(workflow(), run_id="p1")
    await clock.advance(timedelta(seconds=31))
    result = await FluxEngine(storage, clock=clock, workflows=[workflow(), CHILD]).resume("p1")
    assert result.status == "completed" and result.outputs["spawn"] == 6
    assert calls["child"] == 1


async def test_cancelling_the_parent_cancels_its_children(engine: FluxEngine) -> None:
    wf = create_workflow("parent").child("kid", WAITING_CHILD, input=lambda ctx: {"x": 1}).build()
    parent = await engine.execute(wf, run_id="p1")
    assert parent.status == "suspended"
    cancelled = await engine.cancel("p1", "no longer needed")
    assert cancelled.status == "cancelled"
    child = await engine.get("p1/kid#0")
    assert child.status == "cancelled"
    assert child.error is not None and "its parent run p1 was cancelled" in child.error.message


async def test_children_run_side_by_side_in_a_parallel_group(engine: FluxEngine) -> None:
    wf = create_workflow("parent").parallel(
        "kids",
        create_workflow("one").child("kid-1", CHILD, input=lambda ctx: {"x": 1}),
        create_workflow("two").child("kid-2", WAITING_CHILD, input=lambda ctx: {"x": 2}),
    )
    parent = await engine.execute(wf, run_id="p1")
    assert parent.status == "suspended"
    await engine.signal("p1/kid-2#2", "go")
    await engine.resume("p1/kid-2#2")
    result = await engine.resume("p1")
    assert result.status == "completed"
    assert result.outputs["kids"] == {
        "one": {"run_id": "p1/kid-1#1", "status": "completed", "outputs": {"double": 2}},
        "two": {"run_id": "p1/kid-2#2", "status": "completed", "outputs": {"double": 4}},
    }


async def test_run_child_outside_an_engine_says_so() -> None:
    ctx: StepContext[Any] = StepContext(
        input=None, data=RunData(), outputs={}, run_id="r", workflow="w", step="s", attempt=1
    )
    with pytest.raises(RuntimeError, match="only in a step run by a FluxEngine"):
        await ctx.run_child(CHILD, {"x": 1})
