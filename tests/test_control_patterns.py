"""flux.patterns (helpers over the constructs) and flux.run_metrics."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from flux import FluxEngine, MemoryStorage, StepContext, create_workflow, run_metrics
from flux.patterns import batch_process, conditional, fan_out_fan_in, pipeline, result_of, retry_with_fallback
from flux.testing import FakeClock


@pytest.fixture
def engine() -> FluxEngine:
    return FluxEngine(MemoryStorage(), clock=FakeClock())


def fetch(ctx: StepContext[Any]) -> int:
    return 2


def scale(ctx: StepContext[Any]) -> int:
    return int(ctx.outputs["fetch"]) * 10


async def test_pipeline(engine: FluxEngine) -> None:
    result = await engine.execute(pipeline("etl", fetch, ("scale-it", scale)))
    assert result.outputs == {"fetch": 2, "scale-it": 20}
    with pytest.raises(TypeError, match="give the step"):
        pipeline("etl", lambda ctx: 1)


async def test_fan_out_fan_in(engine: FluxEngine) -> None:
    flow = fan_out_fan_in(
        create_workflow("quote"),
        "prices",
        {"acme": lambda ctx: 12, "globex": lambda ctx: 9},
        merge=lambda ctx, outputs: min(outputs, key=outputs.__getitem__),
    )
    result = await engine.execute(flow)
    assert result.outputs["prices"] == {"acme": 12, "globex": 9}
    assert result.outputs["prices-merge"] == "globex"


@pytest.mark.parametrize(("tier", "expected"), [("gold", "vip"), ("tin", "standard")])
async def test_conditional(engine: FluxEngine, tier: str, expected: str) -> None:
    flow = conditional(
        create_workflow("greet"),
        "tier",
        on=lambda ctx: ctx.input["tier"],
        cases={"gold": lambda ctx: "vip"},
        default=lambda ctx: "standard",
    )
    result = await engine.execute(flow, {"tier": tier})
    assert expected in result.outputs.values()


async def test_retry_with_fallback(engine: FluxEngine) -> None:
    attempts: list[int] = []

    def primary(ctx: StepContext[Any]) -> str:
        attempts.append(ctx.attempt)
        raise ConnectionError("primary down")

    flow = retry_with_fallback(
        create_workflow("book"), "book", primary, lambda ctx: f"backup after {ctx.failure.message}", retries=2
    ).step("confirm", lambda ctx: result_of(ctx, "book"))
    result = await engine.execute(flow)
    assert attempts == [1, 2, 3]
    assert result.outputs["confirm"] == "backup after primary down"
    healthy = retry_with_fallback(create_workflow("b"), "book", lambda ctx: "primary", lambda ctx: "backup")
    result = await engine.execute(healthy.step("confirm", lambda ctx: result_of(ctx, "book")))
    assert result.outputs["confirm"] == "primary"


async def test_batch_process(engine: FluxEngine) -> None:
    flow = batch_process(
        create_workflow("b"), "square", lambda ctx, n: n * n, over=lambda ctx: range(10), batch_size=4
    )
    result = await engine.execute(flow)
    assert result.outputs["square"] == [n * n for n in range(10)]
    assert len([r for r in result.history if r.step.startswith("square[")]) == 3


# --- metrics ------------------------------------------------------------------------------


async def test_metrics_of_a_chain() -> None:
    clock = FakeClock()

    async def work(ctx: StepContext[Any]) -> None:
        await clock.sleep(2)

    def flaky(ctx: StepContext[Any]) -> None:
        if ctx.attempt == 1:
            raise ConnectionError("again")

    async with FluxEngine(clock=clock) as engine:
        result = await engine.execute(create_workflow("w").step("a", work).step("b", flaky, retries=1))
    report = run_metrics(result)
    assert report.steps["a"].duration == pytest.approx(2.0)
    assert report.steps["b"].attempts == 2
    assert report.parallelism == pytest.approx(1.0, abs=0.01)
    assert report.critical_path == ("a", "b")
    assert json.loads(json.dumps(report.to_json()))["steps"]["a"]["visits"] == 1


async def test_metrics_of_a_parallel_group_show_the_parallelism() -> None:
    clock = FakeClock(auto_advance=False)

    async def work(ctx: StepContext[Any]) -> None:
        await clock.sleep(10)

    wf = create_workflow("w").parallel("g", *(create_workflow(f"b{i}").step(f"s{i}", work) for i in range(3)))
    async with FluxEngine(clock=clock) as engine:
        running = asyncio.ensure_future(engine.execute(wf))
        await clock.wait_for_timers(3)
        await clock.advance(10)
        result = await running
    report = run_metrics(result)
    assert report.busy == pytest.approx(30.0)
    assert report.wall == pytest.approx(10.0)
    assert report.parallelism == pytest.approx(3.0)
    assert report.steps["g"].duration == pytest.approx(10.0)


async def test_the_critical_path_of_a_graph_follows_its_slowest_dependencies() -> None:
    clock = FakeClock(auto_advance=False)
    durations = {"a": 1, "b": 5, "c": 1, "d": 1}

    async def work(ctx: StepContext[Any]) -> None:
        await clock.sleep(durations[ctx.step])

    wf = (
        create_workflow("g")
        .step("a", work)
        .step("b", work, after=["a"])
        .step("c", work, after=["a"])
        .step("d", work, after=["b", "c"])
        .build()
    )
    async with FluxEngine(clock=clock) as engine:
        running = asyncio.ensure_future(engine.execute(wf))
        for count, step in ((1, 1), (2, 1), (1, 4), (1, 1)):
            await clock.wait_for_timers(count)
            await clock.advance(step)
        result = await running
    assert result.status == "completed"
    report = run_metrics(result, wf)
    assert report.critical_path == ("a", "b", "d")
    assert report.critical_path_duration == pytest.approx(7.0)
    assert run_metrics(result).critical_path == ("a", "b", "d")  # read from the visits' times alone


async def test_metrics_fold_map_items_into_their_step(engine: FluxEngine) -> None:
    result = await engine.execute(create_workflow("m").map("m", lambda ctx, n: n, over=lambda ctx: [1, 2, 3]))
    step = run_metrics(result).steps["m"]
    assert (step.visits, step.items, step.attempts) == (1, 3, 4)
