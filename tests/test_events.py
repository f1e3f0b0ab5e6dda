"""Lifecycle events: names, order, typed frozen payloads, subscribers."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import attrs
import pytest

from flux import Event, FluxEngine, RetryPolicy, StepContext, create_workflow
from flux.events import (
    EVENT_TYPES,
    RollbackComplete,
    RollbackStart,
    StepCompensate,
    StepComplete,
    StepFailed,
    StepSkip,
    StepStart,
    WorkflowComplete,
    WorkflowFailed,
    WorkflowStart,
)
from flux.testing import EventRecorder, FakeClock

QUICK = RetryPolicy(max_attempts=2, initial_delay=1, jitter=0)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def fail(ctx: StepContext[Any]) -> None:
    raise ValueError("card declined")


def undo(ctx: StepContext[Any]) -> None:
    return None


async def test_a_successful_run_emits_start_step_pairs_and_complete(clock: FakeClock) -> None:
    recorder = EventRecorder()
    async with FluxEngine(clock=clock, on={"*": recorder}) as engine:
        result = await engine.execute(create_workflow("ok").step("a", lambda ctx: 1).step("b", lambda ctx: 2))
    assert recorder.names == [
        "workflow_start",
        "step_start",
        "step_complete",
        "step_start",
        "step_complete",
        "workflow_complete",
    ]
    assert recorder.steps("step_start") == ["a", "b"]
    assert {e.run_id for e in recorder.events} == {result.id}
    assert {e.workflow for e in recorder.events} == {"ok"}
    assert {e.timestamp for e in recorder.events} == {clock.now()}


async def test_a_rolled_back_run_emits_error_and_rollback_events(clock: FakeClock) -> None:
    recorder = EventRecorder()
    wf = (
        create_workflow("saga")
        .step("reserve", lambda ctx: "r1", compensate=undo)
        .step("skipped", lambda ctx: None, when=lambda ctx: False)
        .step("charge", fail)
    )
    async with FluxEngine(clock=clock, on={"*": recorder}) as engine:
        result = await engine.execute(wf)
    assert result.status == "rolled_back"
    assert recorder.names == [
        "workflow_start",
        "step_start",
        "step_complete",
        "step_skip",
        "step_start",
        "step_error",
        "rollback_start",
        "step_compensate",
        "rollback_complete",
        "workflow_error",
    ]
    (rollback,) = recorder.of("rollback_start")
    assert isinstance(rollback, RollbackStart)
    assert rollback.steps == ("reserve",)
    assert rollback.error is not None and rollback.error.type == "ValueError"
    (done,) = recorder.of("rollback_complete")
    assert isinstance(done, RollbackComplete) and done.succeeded
    (compensated,) = recorder.of("step_compensate")
    assert isinstance(compensated, StepCompensate)
    assert (compensated.step, compensated.error) == ("reserve", None)
    (error,) = recorder.of("workflow_error")
    assert isinstance(error, WorkflowFailed)
    assert error.status == "rolled_back"
    assert error.error is not None and error.error.message == "card declined"


async def test_payloads_are_typed_and_frozen(clock: FakeClock) -> None:
    recorder = EventRecorder()

    async def slow(ctx: StepContext[Any]) -> dict[str, int]:
        await clock.sleep(1.5)
        return {"n": 1}

    wf = create_workflow("typed").step("slow", slow).step("skip", undo, when=lambda ctx: False)
    async with FluxEngine(clock=clock, on={"*": recorder}) as engine:
        await engine.execute(wf)
        await engine.execute(create_workflow("bad").step("fail", fail, retries=0))

    for event in recorder.events:
        assert isinstance(event, Event)
        assert isinstance(event, EVENT_TYPES[event.name])
        assert attrs.has(type(event))
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            event.run_id = "other"  # type: ignore[misc]

    start = recorder.of("workflow_start")[0]
    assert isinstance(start, WorkflowStart)
    step_start = recorder.of("step_start")[0]
    assert isinstance(step_start, StepStart)
    assert (step_start.step, step_start.attempt) == ("slow", 1)
    complete = recorder.of("step_complete")[0]
    assert isinstance(complete, StepComplete)
    assert (complete.step, complete.attempt, complete.duration, complete.output) == ("slow", 1, 1.5, {"n": 1})
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        complete.duration = 0.0  # type: ignore[misc]
    skip = recorder.of("step_skip")[0]
    assert isinstance(skip, StepSkip) and skip.step == "skip"
    finished = recorder.of("workflow_complete")[0]
    assert isinstance(finished, WorkflowComplete)
    assert (finished.duration, finished.outputs) == (1.5, {"slow": {"n": 1}})
    error = recorder.of("step_error")[0]
    assert isinstance(error, StepFailed)
    assert (error.step, error.attempt, error.error.type, error.error.message) == (
        "fail",
        1,
        "ValueError",
        "card declined",
    )


async def test_sync_and_async_subscribers_are_awaited_in_order(clock: FakeClock) -> None:
    calls: list[tuple[str, str]] = []

    async def slow_async(event: Event) -> None:
        for _ in range(3):
            await asyncio.sleep(0)  # yields to the loop: the run must still wait for it
        calls.append(("async", event.name))

    def plain(event: Event) -> None:
        calls.append(("sync", event.name))

    async def last(event: Event) -> None:
        calls.append(("async-2", event.name))

    def second(ctx: StepContext[Any]) -> None:
        # step_complete of "first" was delivered to every subscriber before this step started
        assert calls[-3:] == [("async", "step_start"), ("sync", "step_start"), ("async-2", "step_start")]
        assert ("async-2", "step_complete") in calls

    async with FluxEngine(clock=clock) as engine:
        for fn in (slow_async, plain, last):
            engine.on("step_start", fn)
            engine.on("step_complete", fn)
        result = await engine.execute(
            create_workflow("order").step("first", lambda ctx: 1).step("second", second)
        )
    assert result.status == "completed"
    assert calls == [
        (who, name)
        for name in ("step_start", "step_complete", "step_start", "step_complete")
        for who in ("async", "sync", "async-2")
    ]


async def test_wildcard_receives_every_event_after_the_named_subscribers(clock: FakeClock) -> None:
    calls: list[str] = []
    async with FluxEngine(clock=clock) as engine:
        engine.on("*", lambda e: calls.append(f"*:{e.name}"))
        engine.on("workflow_complete", lambda e: calls.append(f"named:{e.name}"))
        await engine.execute(create_workflow("w").step("a", lambda ctx: 1))
    assert calls == [
        "*:workflow_start",
        "*:step_start",
        "*:step_complete",
        "named:workflow_complete",
        "*:workflow_complete",
    ]


async def test_unsubscribe(clock: FakeClock) -> None:
    seen: list[str] = []
    kept: list[str] = []
    wf = create_workflow("w").step("a", lambda ctx: 1)
    async with FluxEngine(clock=clock) as engine:
        unsubscribe = engine.on("step_start", lambda e: seen.append(e.step))
        engine.on("step_start", lambda e: kept.append(e.step))
        stop_all = engine.on("*", lambda e: seen.append(e.name))
        await engine.execute(wf)
        assert seen == ["workflow_start", "a", "step_start", "step_complete", "workflow_complete"]
        unsubscribe()
        stop_all()
        unsubscribe()  # a second call is harmless
        await engine.execute(wf)
    assert len(seen) == 5
    assert kept == ["a", "a"]


async def test_events_follow_their_checkpoint(clock: FakeClock) -> None:
    """A subscriber that loads the run sees the state the event announces."""
    stored: list[tuple[str, str, list[tuple[str, str]]]] = []

    async with FluxEngine(clock=clock) as engine:

        async def look(event: Event) -> None:
            run = await engine.get(event.run_id)
            stored.append((event.name, run.status, [(h.step, h.status) for h in run.history]))

        for name in ("step_start", "step_complete", "workflow_complete"):
            engine.on(name, look)
        await engine.execute(create_workflow("w").step("a", lambda ctx: 1).step("b", lambda ctx: 2))
    assert stored == [
        ("step_start", "running", [("a", "running")]),
        ("step_complete", "running", [("a", "completed"), ("b", "running")]),
        ("step_start", "running", [("a", "completed"), ("b", "running")]),
        ("step_complete", "completed", [("a", "completed"), ("b", "completed")]),
        ("workflow_complete", "completed", [("a", "completed"), ("b", "completed")]),
    ]


async def test_a_raising_subscriber_never_changes_the_outcome(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    after: list[str] = []

    def broken(event: Event) -> None:
        raise RuntimeError("subscriber bug")

    async def broken_async(event: Event) -> None:
        await asyncio.sleep(0)
        raise KeyError("async subscriber bug")

    wf = create_workflow("w").step("a", lambda ctx: 1).step("b", fail, retry=QUICK)
    async with FluxEngine(clock=clock, on={"*": broken}) as engine:
        engine.on("*", broken_async)
        engine.on("*", lambda e: after.append(e.name))
        ok = await engine.execute(create_workflow("ok").step("a", lambda ctx: 1))
        failed = await engine.execute(wf)
        assert await engine.get(ok.id) == ok
    assert ok.status == "completed" and ok.outputs == {"a": 1}
    assert failed.status == "failed"
    assert failed.error is not None and failed.error.message == "card declined"
    assert after[-1] == "workflow_error"  # later subscribers still got every event
    assert after.count("workflow_start") == 2
    logged = [r for r in caplog.records if r.name == "flux.events" and r.levelno == logging.ERROR]
    assert len(logged) == 2 * len(after)
    assert "failed on workflow_start; ignored" in logged[0].getMessage()


async def test_on_at_construction_and_bad_subscriptions() -> None:
    seen: list[str] = []
    async with FluxEngine(clock=FakeClock(), on={"step_complete": lambda e: seen.append(e.step)}) as engine:
        await engine.execute(create_workflow("w").step("a", lambda ctx: 1))
        with pytest.raises(ValueError, match="unknown event 'step_done'") as info:
            engine.on("step_done", print)
        for name in EVENT_TYPES:
            assert name in str(info.value)
        with pytest.raises(TypeError, match="must be callable"):
            engine.on("step_start", "print")  # type: ignore[call-overload]
    assert seen == ["a"]
    with pytest.raises(ValueError, match=r"subscribe to one of: .*workflow_start"):
        FluxEngine(on={"workflow_started": print})


def test_event_recorder_helpers() -> None:
    recorder = EventRecorder()
    recorder(StepStart(run_id="r", workflow="w", timestamp=FakeClock().now(), step="a"))
    assert recorder.names == ["step_start"]
    assert recorder.steps("step_start") == ["a"]
    assert recorder.of("step_complete") == []
    recorder.clear()
    assert recorder.events == []
