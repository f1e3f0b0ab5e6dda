"""goto (loops and state machines, each visit recorded) and on_failure routes (ctx.failure)."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from flux import FluxEngine, StepContext, Workflow, create_workflow, goto
from flux.storage import Storage
from flux.testing import EventRecorder, FakeClock


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


def review_loop(**options: Any) -> Workflow[Any]:
    """draft -> review -> (back to draft until the third round) -> publish."""

    def draft(ctx: StepContext[Any]) -> int:
        ctx.data["round"] = ctx.data.get("round", 0) + 1
        return int(ctx.data["round"])

    def review(ctx: StepContext[Any]) -> Any:
        return goto("draft") if ctx.data["round"] < 3 else "approved"

    return (
        create_workflow("review")
        .step("draft", draft)
        .step("review", review, goto=["draft"], **options)
        .step("publish", echo)
        .build()
    )


async def test_a_loop_records_every_visit(engine: FluxEngine) -> None:
    recorder = EventRecorder()
    engine.on("step_start", recorder)
    result = await engine.execute(review_loop())
    assert result.status == "completed"
    assert [r.step for r in result.history] == ["draft", "review"] * 3 + ["publish"]
    assert [r.seq for r in result.history] == list(range(7))
    assert [r.output for r in result.history if r.step == "draft"] == [1, 2, 3]
    assert [r.actions.get("flux:goto") for r in result.history if r.step == "review"] == [
        "draft",
        "draft",
        None,
    ]
    assert result.outputs == {"draft": 3, "review": "approved", "publish": "publish-out"}
    assert recorder.steps("step_start") == [r.step for r in result.history]


async def test_goto_forward_skips_the_steps_in_between(engine: FluxEngine) -> None:
    wf = (
        create_workflow("w")
        .step("a", lambda ctx: goto("d"))
        .step("b", echo)
        .step("c", echo)
        .step("d", echo)
        .build()
    )
    result = await engine.execute(wf)
    assert [r.step for r in result.history] == ["a", "d"]


async def test_max_visits_stops_a_runaway_loop_with_a_clear_error(engine: FluxEngine) -> None:
    wf = (
        create_workflow("w")
        .step("spin", lambda ctx: None)
        .step("again", lambda ctx: goto("spin"), max_visits=4)
    )
    result = await engine.execute(wf)
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.type == "MaxVisitsError"
    assert result.error.step == "again"
    assert "max_visits=4" in result.error.message and "goto loop" in result.error.message
    assert [r.step for r in result.history].count("again") == 5  # four visits and the refused one
    assert result.history[-1].status == "failed"


async def test_max_visits_defaults_to_100(engine: FluxEngine) -> None:
    result = await engine.execute(create_workflow("w").step("a", lambda ctx: goto("a")))
    assert result.error is not None and result.error.type == "MaxVisitsError"
    assert len(result.history) == 101


@pytest.mark.parametrize(
    ("wf", "message"),
    [
        (
            create_workflow("w").step("a", lambda ctx: goto("nope")),
            "returned goto('nope'), which is not a step",
        ),
        (
            create_workflow("w").step("a", lambda ctx: goto("c"), goto=["b"]).step("b", echo).step("c", echo),
            "not among its declared goto targets",
        ),
        (
            create_workflow("w")
            .step("x", echo)
            .parallel("g", create_workflow("b").step("b1", lambda ctx: goto("x"))),
            "returned goto('x'), which is not a step of its chain",
        ),
        (
            create_workflow("w").step("x", echo).step("y", lambda ctx: goto("x"), after=["x"]),
            "goto is not available in a dependency plan",
        ),
    ],
    ids=["unknown", "undeclared", "out-of-branch", "in-graph"],
)
async def test_a_bad_goto_target_fails_the_step_without_retries(
    engine: FluxEngine, wf: Any, message: str
) -> None:
    result = await engine.execute(wf)
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.type == "UnknownStepError"
    assert message in result.error.message
    failed = next(r for r in result.history if r.status == "failed")
    assert failed.attempts == 1


async def test_goto_within_a_branch_chain(engine: FluxEngine) -> None:
    def retry_until_third(ctx: StepContext[Any]) -> Any:
        ctx.data["n"] = ctx.data.get("n", 0) + 1
        return goto("b1") if ctx.data["n"] < 3 else "ok"

    wf = create_workflow("w").parallel(
        "g",
        create_workflow("b").step("b1", echo).step("b2", retry_until_third),
        create_workflow("c").step("c1", echo),
    )
    result = await engine.execute(wf)
    assert result.status == "completed"
    assert [r.step for r in result.history if r.step.startswith("b")] == ["b1", "b2"] * 3


async def test_a_resumed_loop_continues_after_the_last_visit_not_at_the_first_undone_step(
    storage: Storage, clock: FakeClock
) -> None:
    calls: Counter[str] = Counter()
    crash_on = 2

    def draft(ctx: StepContext[Any]) -> int:
        calls["draft"] += 1
        ctx.data["round"] = ctx.data.get("round", 0) + 1
        return int(ctx.data["round"])

    def review(ctx: StepContext[Any]) -> Any:
        calls["review"] += 1
        if ctx.data["round"] == crash_on and calls["review"] == crash_on:
            raise Crash()
        return goto("draft") if ctx.data["round"] < 3 else "approved"

    def workflow() -> Workflow[Any]:
        return (
            create_workflow("loop").step("draft", draft).step("review", review).step("publish", echo).build()
        )

    first = FluxEngine(storage, clock=clock)
    with pytest.raises(Crash):
        await first.execute(workflow(), run_id="r1")
    await clock.advance(timedelta(seconds=31))
    result = await FluxEngine(storage, clock=clock, workflows=[workflow()]).resume("r1")
    assert result.status == "completed"
    assert [r.step for r in result.history] == ["draft", "review"] * 3 + ["publish"]
    assert calls == {"draft": 3, "review": 4}  # only the visit in flight ran twice


# --- on_failure ---------------------------------------------------------------------------


def boom(ctx: StepContext[Any]) -> None:
    raise RuntimeError("gateway down")


async def test_a_failure_is_routed_to_the_recovery_step(engine: FluxEngine) -> None:
    seen: list[Any] = []

    def manual(ctx: StepContext[Any]) -> str:
        seen.append(ctx.failure)
        return "queued for a human"

    wf = (
        create_workflow("charge")
        .step("charge", boom, retries=1, on_failure="manual")
        .step("ship", echo)
        .step("manual", manual)
        .build()
    )
    result = await engine.execute(wf)
    assert result.status == "completed"
    assert [(r.step, str(r.status)) for r in result.history] == [
        ("charge", "failed"),
        ("manual", "completed"),
    ]
    (failure,) = seen
    assert (failure.type, failure.message, failure.step, failure.attempt) == (
        "RuntimeError",
        "gateway down",
        "charge",
        2,
    )
    ok = await engine.execute(
        create_workflow("charge")
        .step("charge", echo, on_failure="manual")
        .step("ship", echo)
        .step("manual", manual)
    )
    assert [r.step for r in ok.history] == ["charge", "ship"]  # recovery steps run only when routed to


async def test_a_recovery_step_continues_the_chain_after_itself(engine: FluxEngine) -> None:
    wf = (
        create_workflow("w")
        .step("primary", boom, retries=0, on_failure="fallback")
        .step("fallback", lambda ctx: f"fallback for {ctx.failure.step if ctx.failure else None}")
        .step("next", lambda ctx: ctx.outputs.get("primary") or ctx.outputs["fallback"])
        .build()
    )
    result = await engine.execute(wf)
    assert result.outputs["next"] == "fallback for primary"


async def test_a_failing_recovery_step_fails_the_run(engine: FluxEngine) -> None:
    wf = create_workflow("w").step("a", boom, retries=0, on_failure="b").step("b", boom, retries=0)
    result = await engine.execute(wf)
    assert result.status == "failed"
    assert result.error is not None and result.error.step == "b"


async def test_a_routed_group_failure_reaches_the_recovery_step(engine: FluxEngine) -> None:
    wf = (
        create_workflow("w")
        .parallel("g", create_workflow("x").step("x1", boom, retries=0), on_failure="recover")
        .step("recover", lambda ctx: ctx.failure.step if ctx.failure else None)
        .build()
    )
    result = await engine.execute(wf)
    assert result.status == "completed" and result.outputs["recover"] == "x1"


async def test_ctx_failure_survives_a_crash_of_the_recovery_step(storage: Storage, clock: FakeClock) -> None:
    crash = True
    seen: list[str] = []

    def recover(ctx: StepContext[Any]) -> str:
        nonlocal crash
        assert ctx.failure is not None
        seen.append(ctx.failure.message)
        if crash:
            crash = False
            raise Crash()
        return "recovered"

    def workflow() -> Workflow[Any]:
        return create_workflow("w").step("a", boom, retries=0, on_failure="fix").step("fix", recover).build()

    with pytest.raises(Crash):
        await FluxEngine(storage, clock=clock).execute(workflow(), run_id="r1")
    await clock.advance(timedelta(seconds=31))
    result = await FluxEngine(storage, clock=clock, workflows=[workflow()]).resume("r1")
    assert result.status == "completed"
    assert seen == ["gateway down", "gateway down"]
