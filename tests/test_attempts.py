"""Attempt deadlines armed before the handler starts; outputs and data that never alias."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest

from flux import FluxEngine, StepContext, StepTimeoutError, create_workflow
from flux.clock import Deadline
from flux.events import StepComplete
from flux.testing import FakeClock

# --- deadlines ------------------------------------------------------------------------------


class BlockingClock:
    """A FakeClock whose time a handler can move without awaiting: blocking work, simulated."""

    def __init__(self) -> None:
        self.inner = FakeClock()
        self.blocked = timedelta(0)

    def block(self, seconds: float) -> None:
        self.blocked += timedelta(seconds=seconds)

    def now(self) -> datetime:
        return self.inner.now() + self.blocked

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)

    def timeout(self, seconds: float | None) -> Deadline:
        return self.inner.timeout(seconds)


async def test_an_async_step_that_blocks_past_its_deadline_fails_at_its_first_await() -> None:
    clock = BlockingClock()
    reached: list[str] = []

    async def blocks(ctx: StepContext[Any]) -> str:
        clock.block(1.5)  # 1.5 s of blocking work before the first await
        await asyncio.sleep(0)
        reached.append("after the first await")
        return "late"

    async with FluxEngine(clock=clock) as engine:
        result = await engine.execute(create_workflow("w").step("blocks", blocks, timeout=1, retries=0))

    assert result.status == "failed"
    assert result.error is not None and result.error.type == "StepTimeoutError"
    assert reached == []  # stopped at its first suspension, not resumed
    assert issubclass(StepTimeoutError, TimeoutError)


async def test_the_deadline_counts_the_blocking_work_before_the_first_await() -> None:
    clock = BlockingClock()

    async def blocks_then_waits(ctx: StepContext[Any]) -> str:
        clock.block(0.6)
        await asyncio.Event().wait()
        return "never"

    async with FluxEngine(clock=clock) as engine:
        running = asyncio.create_task(
            engine.execute(create_workflow("w").step("slow", blocks_then_waits, timeout=1, retries=0))
        )
        await clock.inner.wait_for_timers()
        await clock.inner.advance(0.3)
        assert not running.done()
        await clock.inner.advance(0.1)  # 0.6 blocked + 0.4 waited: the 1 s deadline
        result = await running

    assert result.status == "failed"
    assert result.error is not None and result.error.type == "StepTimeoutError"


async def test_a_coroutine_that_returns_without_suspending_keeps_its_result() -> None:
    clock = BlockingClock()

    async def blocks_and_returns(ctx: StepContext[Any]) -> str:
        clock.block(5)  # cannot be stopped: it never suspends
        return "done"

    async with FluxEngine(clock=clock) as engine:
        result = await engine.execute(create_workflow("w").step("s", blocks_and_returns, timeout=1))

    assert result.status == "completed"
    assert result.outputs == {"s": "done"}


# --- outputs never alias --------------------------------------------------------------------


async def test_outputs_are_independent_copies_everywhere() -> None:
    events: list[StepComplete] = []
    seen: list[Any] = []

    def spoil(event: StepComplete) -> None:
        events.append(event)
        if isinstance(event.output, list):
            event.output.append("from a subscriber")

    def make(ctx: StepContext[Any]) -> list[str]:
        return ["a"]

    def mutate(ctx: StepContext[Any]) -> None:
        items = ctx.outputs["make"]
        assert isinstance(items, list)
        items.append("from a later step")
        seen.append(list(items))

    def look(ctx: StepContext[Any]) -> None:
        seen.append(ctx.outputs["make"])

    def fail(ctx: StepContext[Any]) -> None:
        raise ValueError("undo everything")

    flow = (
        create_workflow("alias")
        .step("make", make, compensate=lambda ctx: None)
        .step("mutate", mutate)
        .step("look", look)
        .step("fail", fail, retries=0)
    )
    async with FluxEngine(clock=FakeClock(), on={"step_complete": spoil}) as engine:
        result = await engine.execute(flow)
        made = result.outputs["make"]
        assert isinstance(made, list)
        made.append("from the caller")
        stored = await engine.get(result.id)

    assert result.status == "rolled_back"  # the compensation re-wrote make's record
    assert seen == [["a", "from a later step"], ["a"]]
    assert stored.outputs == {"make": ["a"]}
    assert stored.history[0].output == ["a"]
    assert events[0].output == ["a", "from a subscriber"]


# --- copies of ctx.data are recorded ------------------------------------------------------------


COPIES: dict[str, Callable[[Any], dict[str, Any]]] = {
    "dict()": lambda data: dict(data),
    "{**data}": lambda data: {**data},
    ".copy()": lambda data: data.copy(),
    "| {}": lambda data: data | {},
}


@pytest.mark.parametrize("copy", COPIES.values(), ids=list(COPIES))
async def test_in_place_changes_through_a_copy_of_ctx_data_are_stored(copy: Callable[[Any], Any]) -> None:
    def change_through_copy(ctx: StepContext[Any]) -> None:
        copy(ctx.data)["items"].append("changed through a copy")

    flow = (
        create_workflow("copies")
        .step("init", lambda ctx: ctx.data.update(items=["first"]))
        .step("change", change_through_copy)
        .step("read", lambda ctx: list(ctx.data["items"]))
    )
    async with FluxEngine(clock=FakeClock()) as engine:
        result = await engine.execute(flow)
        stored = await engine.get(result.id)
        rerun = await engine.resume(result.id, from_step="read")

    expected = ["first", "changed through a copy"]
    assert result.data == stored.data == {"items": expected}
    assert result.history[1].data_set == {"items": expected}
    assert rerun.outputs["read"] == expected  # rebuilt from the records
