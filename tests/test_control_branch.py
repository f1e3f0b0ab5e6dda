"""Branches: the key is evaluated once and recorded; only the chosen chain runs; a resumed run
takes the same branch even when the key would now come out differently."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from flux import FluxEngine, StepContext, Workflow, WorkflowBuilder, create_workflow
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


def echo(ctx: StepContext[Any]) -> str:
    return f"{ctx.step}-out"


def chain(name: str, *steps: str) -> WorkflowBuilder[Any]:
    builder = create_workflow(name)
    for step in steps:
        builder = builder.step(step, echo)
    return builder


def routed(default: bool = True) -> Workflow[Any]:
    return (
        create_workflow("route")
        .branch(
            "size",
            on=lambda ctx: ctx.input["size"],
            cases={"big": chain("big", "big-1", "big-2"), "small": chain("small", "small-1")},
            default=chain("other", "other-1") if default else None,
        )
        .step("done", lambda ctx: sorted(ctx.outputs))
        .build()
    )


@pytest.mark.parametrize(
    ("size", "ran"),
    [("big", ["big-1", "big-2"]), ("small", ["small-1"]), ("huge", ["other-1"])],
)
async def test_only_the_chosen_chain_runs(engine: FluxEngine, size: str, ran: list[str]) -> None:
    result = await engine.execute(routed(), {"size": size})
    assert result.status == "completed"
    assert [r.step for r in result.history] == ["size", *ran, "done"]
    assert result.outputs["size"] == size  # the branch's output is its key
    decision = result.history[0]
    assert decision.actions["flux:key"] == size
    assert decision.actions["flux:case"] == (size if size in ("big", "small") else "default")


async def test_a_key_without_a_case_or_default_fails_the_branch(engine: FluxEngine) -> None:
    result = await engine.execute(routed(default=False), {"size": "huge"})
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.step == "size"
    assert (
        "returned 'huge', which matches no case ('big', 'small') and there is no default="
        in result.error.message
    )


async def test_a_step_inside_a_case_is_retried(engine: FluxEngine) -> None:
    def flaky(ctx: StepContext[Any]) -> int:
        if ctx.attempt < 2:
            raise ConnectionError("again")
        return ctx.attempt

    wf = create_workflow("w").branch(
        "b", on=lambda ctx: "x", cases={"x": create_workflow("x").step("flaky", flaky, retries=2)}
    )
    result = await engine.execute(wf)
    assert result.status == "completed" and result.outputs["flaky"] == 2


async def test_a_resumed_run_takes_the_recorded_branch(storage: Storage, clock: FakeClock) -> None:
    evaluations: Counter[str] = Counter()
    keys = iter(["big", "small"])  # a second evaluation would choose the other case
    crash = True

    def key(ctx: StepContext[Any]) -> str:
        value = next(keys)
        evaluations[value] += 1
        return value

    def crashes(ctx: StepContext[Any]) -> str:
        nonlocal crash
        if crash:
            crash = False
            raise Crash()
        return "big-2-out"

    def workflow() -> Workflow[Any]:
        return (
            create_workflow("route")
            .branch(
                "size",
                on=key,
                cases={
                    "big": create_workflow("big").step("big-1", echo).step("big-2", crashes),
                    "small": chain("small", "small-1"),
                },
            )
            .build()
        )

    first = FluxEngine(storage, clock=clock)
    with pytest.raises(Crash):
        await first.execute(workflow(), run_id="r1")
    await clock.advance(timedelta(seconds=31))
    result = await FluxEngine(storage, clock=clock, workflows=[workflow()]).resume("r1")
    assert result.status == "completed"
    assert evaluations == {"big": 1}
    assert [r.step for r in result.history] == ["size", "big-1", "big-2"]
    assert result.outputs == {"size": "big", "big-1": "big-1-out", "big-2": "big-2-out"}


async def test_branches_nest_in_parallel_groups_and_cases_can_wait(engine: FluxEngine) -> None:
    wf = (
        create_workflow("nested")
        .parallel(
            "group",
            create_workflow("left").branch(
                "pick",
                on=lambda ctx: "manual",
                cases={"manual": create_workflow("manual").wait_for_signal("approve").step("m-2", echo)},
            ),
            chain("right", "r-1"),
        )
        .build()
    )
    suspended = await engine.execute(wf)
    assert suspended.status == "suspended"
    await engine.signal(suspended.id, "approve", "yes")
    result = await engine.resume(suspended.id)
    assert result.status == "completed"
    assert result.outputs["group"] == {"left": "manual", "right": "r-1-out"}
    assert result.outputs["approve"] == "yes"
