"""The plan's shape never changes what a step does (issue 8).

Each behaviour below runs twice: once as a straight chain, and once with an unreachable
construct appended (two parallel groups that are only each other's ``on_failure`` route, so
neither is ever visited). The records, events, data and outputs must be identical.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import pytest

from flux import (
    FluxEngine,
    RetryAfter,
    RetryPolicy,
    RunResult,
    StepContext,
    Workflow,
    WorkflowBuilder,
    create_workflow,
    wait,
)
from flux.events import Event
from flux.testing import FakeClock

QUICK = RetryPolicy(max_attempts=3, initial_delay=1, jitter=0)
Build = Callable[[WorkflowBuilder[Any]], Workflow[Any]]


def chain(builder: WorkflowBuilder[Any]) -> Workflow[Any]:
    return builder.build()


def with_unreachable_construct(builder: WorkflowBuilder[Any]) -> Workflow[Any]:
    spare = create_workflow("spare").step("spare-step", lambda ctx: "never")
    other = create_workflow("other").step("other-step", lambda ctx: "never")
    plan = (
        builder.parallel("spare-group", spare, on_failure="other-group")
        .parallel("other-group", other, on_failure="spare-group")
        .build()
    )
    assert not plan.plain
    return plan


@attrs.frozen
class Seen:
    """What a scenario observed, without what differs between any two runs (ids, fingerprints)."""

    results: list[tuple[Any, ...]]
    events: list[tuple[Any, ...]]
    calls: list[str]


def _result(result: RunResult) -> tuple[Any, ...]:
    return (result.status, result.data, result.outputs, result.history, result.error)


def _event(event: Event) -> tuple[Any, ...]:
    fields = attrs.asdict(event, recurse=False)
    fields.pop("run_id")
    return (event.name, sorted(fields.items(), key=lambda item: item[0]))


Scenario = Callable[[FluxEngine, FakeClock, Build, list[str]], Awaitable[list[RunResult]]]


# --- the behaviours ---------------------------------------------------------------------------


async def when_true_and_false_with_data_writes(
    engine: FluxEngine, clock: FakeClock, build: Build, calls: list[str]
) -> list[RunResult]:
    def predicate(answer: bool) -> Callable[[StepContext[Any]], bool]:
        def decide(ctx: StepContext[Any]) -> bool:
            ctx.data[f"asked-{ctx.step}"] = answer  # a predicate's writes are dropped
            return answer

        return decide

    def step(ctx: StepContext[Any]) -> str:
        calls.append(ctx.step)
        ctx.data[ctx.step] = sorted(ctx.data)
        return ctx.step

    flow = (
        create_workflow("shape")
        .step("yes", step, when=predicate(True))
        .step("no", step, when=predicate(False))
        .step("after", step)
    )
    return [await engine.execute(build(flow))]


async def retries_then_success(
    engine: FluxEngine, clock: FakeClock, build: Build, calls: list[str]
) -> list[RunResult]:
    def flaky(ctx: StepContext[Any]) -> int:
        calls.append(f"{ctx.step}#{ctx.attempt}")
        ctx.data.setdefault("xs", [])
        ctx.data["xs"].append(ctx.attempt)  # in place; a failed attempt's change is dropped
        if ctx.attempt < 3:
            raise ConnectionError("try again")
        return ctx.attempt

    flow = create_workflow("shape").step("flaky", flaky, retry=QUICK).step("next", lambda ctx: ctx.data["xs"])
    return [await engine.execute(build(flow))]


async def retries_exhausted(
    engine: FluxEngine, clock: FakeClock, build: Build, calls: list[str]
) -> list[RunResult]:
    def broken(ctx: StepContext[Any]) -> None:
        calls.append(f"{ctx.step}#{ctx.attempt}")
        ctx.data["junk"] = ctx.attempt
        raise ConnectionError("down")

    flow = create_workflow("shape").step("first", lambda ctx: 1).step("broken", broken, retry=QUICK)
    return [await engine.execute(build(flow))]


async def timeout(engine: FluxEngine, clock: FakeClock, build: Build, calls: list[str]) -> list[RunResult]:
    async def slow(ctx: StepContext[Any]) -> str:
        calls.append(f"{ctx.step}#{ctx.attempt}")
        await clock.sleep(5)  # the fake clock moves 5 s: past the 1 s timeout
        return "late"

    flow = create_workflow("shape").step("slow", slow, timeout=1, retries=1)
    return [await engine.execute(build(flow))]


async def retry_after(
    engine: FluxEngine, clock: FakeClock, build: Build, calls: list[str]
) -> list[RunResult]:
    def busy(ctx: StepContext[Any]) -> str:
        calls.append(f"{ctx.step}#{ctx.attempt}")
        if ctx.attempt == 1:
            raise RetryAfter(2)
        if ctx.attempt == 2:
            raise RetryAfter(600)  # longer than durable_after: the run suspends
        return "served"

    flow = create_workflow("shape").step("busy", busy, retries=3)
    first = await engine.execute(build(flow))
    await clock.advance(600)
    return [first, await engine.resume(first.id)]


async def sleeps(engine: FluxEngine, clock: FakeClock, build: Build, calls: list[str]) -> list[RunResult]:
    def done(ctx: StepContext[Any]) -> str:
        calls.append(ctx.step)
        return "done"

    flow = create_workflow("shape").sleep("short", 1).sleep("long", 3600).step("done", done)
    first = await engine.execute(build(flow))
    await clock.advance(3600)
    return [first, await engine.resume(first.id)]


async def waits(engine: FluxEngine, clock: FakeClock, build: Build, calls: list[str]) -> list[RunResult]:
    def ask(ctx: StepContext[Any]) -> Any:
        calls.append(f"{ctx.step}#{ctx.attempt}")
        ctx.data["asked"] = True  # kept with the wait, applied when it completes
        return wait("answer", timeout=60)

    flow = (
        create_workflow("shape")
        .wait_for_signal("approve", signal="approval")
        .step("ask", ask)
        .step("use", lambda ctx: [ctx.outputs["approve"], ctx.outputs["ask"], ctx.data["asked"]])
    )
    first = await engine.execute(build(flow))
    await engine.signal(first.id, "approval", {"by": "ann"})
    second = await engine.resume(first.id)
    await engine.signal(first.id, "answer", 42)
    return [first, second, await engine.resume(first.id)]


class Trip:
    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    def book(self, ctx: StepContext[Any]) -> str:
        self.calls.append(f"book {ctx.step}")
        ctx.data[ctx.step] = "booked"
        return f"{ctx.step}-ref"

    def cancel(self, ctx: StepContext[Any]) -> None:
        self.calls.append(f"cancel {ctx.step}#{ctx.attempt}")
        ctx.data["cancelled"] = ctx.step  # a compensation's writes are dropped
        if ctx.step == "hotel" and ctx.attempt == 1:
            raise ConnectionError("hotel line busy")


def trip_flow(trip: Trip, pay: Callable[[StepContext[Any]], Any]) -> WorkflowBuilder[Any]:
    return (
        create_workflow("shape")
        .step("flight", trip.book, compensate=trip.cancel, retry=QUICK)
        .step("hotel", trip.book, compensate=trip.cancel, retry=QUICK)
        .step("pay", pay, retries=0)
    )


def declined(ctx: StepContext[Any]) -> None:
    raise ValueError("card declined")


async def compensation(
    engine: FluxEngine, clock: FakeClock, build: Build, calls: list[str]
) -> list[RunResult]:
    return [await engine.execute(build(trip_flow(Trip(calls), declined)))]


async def replay(engine: FluxEngine, clock: FakeClock, build: Build, calls: list[str]) -> list[RunResult]:
    trip = Trip(calls)
    paid: list[int] = []

    def pay(ctx: StepContext[Any]) -> str:
        paid.append(1)
        if len(paid) == 1:
            raise ValueError("card declined")
        return "paid"

    flow = build(trip_flow(trip, pay))
    rolled_back = await engine.execute(flow)
    again = await engine.replay(rolled_back.id)  # compensated steps run again
    twice = await engine.replay(again.id)  # completed steps are not called
    return [rolled_back, again, twice]


async def retry_step_and_resume_from_step(
    engine: FluxEngine, clock: FakeClock, build: Build, calls: list[str]
) -> list[RunResult]:
    fixed: list[bool] = []

    def charge(ctx: StepContext[Any]) -> str:
        calls.append(f"{ctx.step}#{ctx.attempt}")
        if not fixed:
            raise ValueError("no funds")
        return "charged"

    def count(ctx: StepContext[Any]) -> int:
        ctx.data["n"] = ctx.data.get("n", 0) + 1
        return int(ctx.data["n"])

    flow = build(
        create_workflow("shape").step("count", count).step("charge", charge, retries=0).step("end", count)
    )
    failed = await engine.execute(flow)
    fixed.append(True)
    retried = await engine.retry_step(failed.id, "charge")
    rerun = await engine.resume(failed.id, from_step="count")
    return [failed, retried, rerun]


async def cancel(engine: FluxEngine, clock: FakeClock, build: Build, calls: list[str]) -> list[RunResult]:
    trip = Trip(calls)
    flow = (
        create_workflow("shape")
        .step("flight", trip.book, compensate=trip.cancel)
        .wait_for_signal("approve", signal="approval")
        .step("after", trip.book)
    )
    first = await engine.execute(build(flow))
    return [first, await engine.cancel(first.id, "changed my mind", compensate=True)]


SCENARIOS: list[Scenario] = [
    when_true_and_false_with_data_writes,
    retries_then_success,
    retries_exhausted,
    timeout,
    retry_after,
    sleeps,
    waits,
    compensation,
    replay,
    retry_step_and_resume_from_step,
    cancel,
]


async def observe(scenario: Scenario, build: Build) -> Seen:
    clock = FakeClock()
    events: list[Event] = []
    calls: list[str] = []
    async with FluxEngine(clock=clock, retry_policy=QUICK, on={"*": events.append}) as engine:
        results = await scenario(engine, clock, build, calls)
        latest = {result.id: result for result in results}
        for run_id, result in latest.items():
            assert _result(await engine.get(run_id)) == _result(result)  # as stored
    return Seen(results=[_result(r) for r in results], events=[_event(e) for e in events], calls=calls)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.__name__ for s in SCENARIOS])
async def test_a_construct_appended_changes_nothing(scenario: Scenario) -> None:
    plain = await observe(scenario, chain)
    shaped = await observe(scenario, with_unreachable_construct)
    assert shaped.calls == plain.calls
    assert shaped.events == plain.events
    assert shaped.results == plain.results


# --- the decided semantics, pinned once -------------------------------------------------------


async def test_decided_semantics_of_predicates_waits_compensations_and_replay() -> None:
    seen = await observe(when_true_and_false_with_data_writes, chain)
    [(status, data, outputs, _, _)] = seen.results
    assert status == "completed"
    assert data == {"yes": [], "after": ["yes"]}  # no "asked-..." key: predicates' writes dropped
    assert seen.calls == ["yes", "after"]

    seen = await observe(retries_then_success, chain)
    [(_, data, outputs, _, _)] = seen.results
    assert data == {"xs": [3]} and outputs["next"] == [3]  # failed attempts' appends dropped

    seen = await observe(waits, chain)
    _, second, third = seen.results
    assert second[1] == {}  # while it waits, the handler's write is not in the data yet
    assert third[1] == {"asked": True}
    assert third[2]["use"] == [{"by": "ann"}, 42, True]

    seen = await observe(compensation, chain)
    [(status, data, _, history, _)] = seen.results
    assert status == "rolled_back"
    assert [(r.step, r.status) for r in history] == [
        ("flight", "compensated"),
        ("hotel", "compensated"),
        ("pay", "failed"),
    ]
    assert "cancelled" not in data
    retries = [e for e in seen.events if e[0] == "step_retry"]
    assert [dict(e[1])["step"] for e in retries] == ["hotel"]  # compensation retries are told

    seen = await observe(replay, chain)
    assert seen.calls == [
        "book flight",
        "book hotel",
        "cancel hotel#1",
        "cancel hotel#2",
        "cancel flight#1",
        "book flight",
        "book hotel",
    ]  # replay called the compensated steps again
    assert [r[0] for r in seen.results] == ["rolled_back", "completed", "completed"]
