"""Saga compensation: completed steps are undone newest first when a later step fails for good."""

from __future__ import annotations

from typing import Any

import pytest

from flux import FluxEngine, InvalidStepError, RetryPolicy, RunResult, StepContext, create_workflow
from flux.testing import EventRecorder, FakeClock

QUICK = RetryPolicy(max_attempts=3, initial_delay=1, jitter=0)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def engine(clock: FakeClock) -> Any:
    async with FluxEngine(clock=clock, retry_policy=QUICK) as engine:
        yield engine


async def assert_stored_matches(engine: FluxEngine, result: RunResult) -> None:
    assert await engine.get(result.id) == result


def declined(ctx: StepContext[Any]) -> None:
    raise ValueError("card declined")


class Trip:
    """Steps that book things and compensations that cancel them, logging both."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.seen: list[tuple[str, int, Any, dict[str, Any]]] = []

    def book(self, ctx: StepContext[Any]) -> str:
        self.log.append(f"book {ctx.step}")
        ctx.data[ctx.step] = "booked"
        return f"{ctx.step}-ref"

    def cancel(self, ctx: StepContext[Any]) -> None:
        self.log.append(f"cancel {ctx.step}")
        self.seen.append((ctx.step, ctx.attempt, ctx.outputs.get(ctx.step), dict(ctx.data)))


async def test_completed_steps_are_compensated_newest_first(engine: FluxEngine) -> None:
    trip = Trip()
    wf = (
        create_workflow("trip")
        .step("flight", trip.book, compensate=trip.cancel)
        .step("hotel", trip.book, compensate=trip.cancel)
        .step("lounge", trip.book, when=lambda ctx: False, compensate=trip.cancel)
        .step("note", lambda ctx: "no undo needed")
        .step("car", trip.book, compensate=trip.cancel)
        .step("pay", declined)
    )
    result = await engine.execute(wf, {"who": "ada"})

    assert result.status == "rolled_back"
    assert trip.log == [
        "book flight",
        "book hotel",
        "book car",
        "cancel car",
        "cancel hotel",
        "cancel flight",
    ]
    assert [(h.step, h.status) for h in result.history] == [
        ("flight", "compensated"),
        ("hotel", "compensated"),
        ("lounge", "skipped"),
        ("note", "completed"),
        ("car", "compensated"),
        ("pay", "failed"),
    ]
    assert result.error is not None
    assert (result.error.step, result.error.type, result.error.message) == (
        "pay",
        "ValueError",
        "card declined",
    )
    assert result.error.compensation is None
    # a compensation sees its own step's output and the run's data
    assert trip.seen[0] == (
        "car",
        1,
        "car-ref",
        {"flight": "booked", "hotel": "booked", "car": "booked"},
    )
    assert result.outputs == {
        "flight": "flight-ref",
        "hotel": "hotel-ref",
        "note": "no undo needed",
        "car": "car-ref",
    }
    await assert_stored_matches(engine, result)


async def test_rollback_events(engine: FluxEngine) -> None:
    trip = Trip()
    recorder = EventRecorder()
    engine.on("*", recorder)
    wf = (
        create_workflow("trip")
        .step("flight", trip.book, compensate=trip.cancel)
        .step("hotel", trip.book, compensate=trip.cancel)
        .step("pay", declined)
    )
    await engine.execute(wf)
    assert recorder.names[-6:] == [
        "step_error",
        "rollback_start",
        "step_compensate",
        "step_compensate",
        "rollback_complete",
        "workflow_error",
    ]
    assert recorder.of("rollback_start")[0].steps == ("hotel", "flight")
    assert recorder.steps("step_compensate") == ["hotel", "flight"]
    assert recorder.of("workflow_error")[0].status == "rolled_back"


async def test_a_failure_with_nothing_to_undo_is_just_failed(engine: FluxEngine) -> None:
    recorder = EventRecorder()
    engine.on("*", recorder)
    result = await engine.execute(create_workflow("w").step("a", lambda ctx: 1).step("b", declined))
    assert result.status == "failed"
    assert "rollback_start" not in recorder.names
    assert [h.status for h in result.history] == ["completed", "failed"]


async def test_commit_steps_are_never_compensated(engine: FluxEngine) -> None:
    trip = Trip()
    with pytest.raises(InvalidStepError, match="commit step cannot take compensate="):
        create_workflow("w").commit("ship", trip.book, compensate=trip.cancel)  # type: ignore[arg-type]
    wf = (
        create_workflow("trip")
        .step("flight", trip.book, compensate=trip.cancel)
        .commit("email", trip.book)
        .step("pay", declined)
    )
    result = await engine.execute(wf)
    assert result.status == "rolled_back"
    assert trip.log == ["book flight", "book email", "cancel flight"]
    assert [h.status for h in result.history] == ["compensated", "completed", "failed"]


def test_commit_with_compensate_is_a_build_error() -> None:
    from flux import StepSpec, Workflow

    spec = StepSpec(name="email", handler=Trip().book, kind="commit", compensate=Trip().cancel)
    with pytest.raises(InvalidStepError, match="commit step cannot take compensate="):
        Workflow(name="w", steps=(spec,))


async def test_compensations_are_retried_per_the_step_policy(engine: FluxEngine, clock: FakeClock) -> None:
    attempts: list[int] = []

    def flaky_refund(ctx: StepContext[Any]) -> None:
        attempts.append(ctx.attempt)
        if ctx.attempt < 3:
            raise ConnectionError("bank offline")

    wf = create_workflow("w").step("charge", lambda ctx: "c1", compensate=flaky_refund).step("ship", declined)
    result = await engine.execute(wf)
    assert result.status == "rolled_back"
    assert attempts == [1, 2, 3]
    assert clock.slept == [1.0, 2.0]  # QUICK's delays, through the clock
    assert result.history[0].status == "compensated"


async def test_retries_option_bounds_compensation_attempts(engine: FluxEngine) -> None:
    attempts: list[int] = []

    def refund(ctx: StepContext[Any]) -> None:
        attempts.append(ctx.attempt)
        raise ConnectionError("bank offline")

    wf = (
        create_workflow("w")
        .step("charge", lambda ctx: 1, compensate=refund, retries=1)
        .step("ship", declined)
    )
    result = await engine.execute(wf)
    assert attempts == [1, 2]
    assert result.status == "failed"


async def test_a_failing_compensation_fails_the_run_and_keeps_both_errors(engine: FluxEngine) -> None:
    trip = Trip()
    recorder = EventRecorder()
    engine.on("*", recorder)

    def refund_refused(ctx: StepContext[Any]) -> None:
        raise PermissionError("refund window closed")

    wf = (
        create_workflow("trip")
        .step("flight", trip.book, compensate=trip.cancel)
        .step("hotel", trip.book, compensate=refund_refused)
        .step("pay", declined)
    )
    result = await engine.execute(wf)

    assert result.status == "failed"
    assert result.error is not None
    assert (result.error.step, result.error.type, result.error.message) == (
        "pay",
        "ValueError",
        "card declined",
    )
    compensation = result.error.compensation
    assert compensation is not None
    assert (compensation.step, compensation.type, compensation.message) == (
        "hotel",
        "PermissionError",
        "refund window closed",
    )
    assert "refund_refused" in compensation.traceback
    hotel = result.history[1]
    assert hotel.error == compensation
    assert hotel.status == "completed"  # its effect stands: it was not undone
    assert result.outputs["hotel"] == "hotel-ref"
    assert result.data["hotel"] == "booked"
    # the rollback stops at the failing compensation; older steps are left as they are
    assert trip.log == ["book flight", "book hotel"]
    assert result.history[0].status == "completed"

    (event,) = recorder.of("step_compensate")
    assert event.step == "hotel" and event.error == compensation
    assert recorder.of("rollback_complete")[0].succeeded is False
    assert recorder.of("workflow_error")[0].status == "failed"
    await assert_stored_matches(engine, result)


async def test_resuming_after_a_failed_compensation_does_not_redo_completed_steps(engine: FluxEngine) -> None:
    booked: list[str] = []
    pay_attempts: list[int] = []

    def book(ctx: StepContext[Any]) -> str:
        booked.append(ctx.step)
        return ctx.step

    def refund_refused(ctx: StepContext[Any]) -> None:
        raise PermissionError("refund window closed")

    def pay(ctx: StepContext[Any]) -> str:
        pay_attempts.append(1)
        if len(pay_attempts) == 1:
            raise ValueError("card declined")
        return "paid"

    wf = create_workflow("trip").step("hotel", book, compensate=refund_refused).step("pay", pay)
    first = await engine.execute(wf)
    assert first.status == "failed"
    resumed = await engine.resume(first.id)
    assert resumed.status == "completed"
    assert booked == ["hotel"]  # the hotel was booked once
    assert resumed.outputs == {"hotel": "hotel", "pay": "paid"}


async def test_compensations_do_not_leave_data_behind(engine: FluxEngine) -> None:
    """What execute returns matches storage even when a compensation writes to ctx.data."""

    def undo(ctx: StepContext[Any]) -> None:
        ctx.data["undone"] = True

    wf = create_workflow("w").step("a", lambda ctx: ctx.data.update(a=1), compensate=undo).step("b", declined)
    result = await engine.execute(wf)
    assert result.status == "rolled_back"
    assert result.data == {"a": 1}
    await assert_stored_matches(engine, result)


async def test_async_compensation(engine: FluxEngine) -> None:
    undone: list[str] = []

    async def undo(ctx: StepContext[Any]) -> None:
        undone.append(ctx.step)

    wf = create_workflow("w").step("a", lambda ctx: 1, compensate=undo).step("b", declined)
    result = await engine.execute(wf)
    assert result.status == "rolled_back"
    assert undone == ["a"]
