"""Signals: wait_for_signal steps, flux.wait in handlers, engine.signal and wait timeouts."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

import flux
from flux import (
    FluxEngine,
    InvalidNameError,
    InvalidRunStateError,
    RunNotFoundError,
    RunStatus,
    SerializationError,
    StepContext,
    StepStatus,
    Storage,
    UnknownSignalError,
    WaitRequest,
    WaitTimeoutError,
    create_workflow,
)
from flux.testing import EventRecorder, FakeClock

StorageFactory = Callable[[], Storage]


def driving_tasks() -> list[asyncio.Task[Any]]:
    """Tasks that are driving a run right now."""
    return [t for t in asyncio.all_tasks() if getattr(t.get_coro(), "__qualname__", "") == "RunDriver.run"]


def when(engine: FluxEngine, event: str) -> asyncio.Event:
    """An asyncio.Event set the first time ``engine`` emits ``event``."""
    seen = asyncio.Event()
    engine.on(event, lambda _: seen.set())
    return seen


approval = (
    create_workflow("approval")
    .step("draft", lambda ctx: "draft-1")
    .wait_for_signal("approve")
    .step("publish", lambda ctx: f"published by {ctx.outputs['approve']['by']}")
)


# --- suspension ---------------------------------------------------------------------------


async def test_a_waiting_run_is_suspended_stored_and_holds_no_task(engine: FluxEngine) -> None:
    result = await engine.execute(approval)

    assert result.status == RunStatus.SUSPENDED
    assert driving_tasks() == []
    stored = await engine.storage.load(result.id)
    assert stored is not None
    assert stored.status == RunStatus.SUSPENDED
    assert stored.lease_expires_at is None  # no claim: any worker may resume it
    waiting = stored.steps[-1]
    assert (waiting.step, waiting.status, waiting.waiting_for) == ("approve", StepStatus.SUSPENDED, "approve")
    assert (await engine.get(result.id)).outputs == {"draft": "draft-1"}


async def test_a_signal_after_the_wait_resumes_the_run_and_its_payload_is_the_output(
    engine: FluxEngine,
) -> None:
    recorder = EventRecorder()
    engine.on("*", recorder)
    run = await engine.execute(approval)

    async with engine.worker():
        stored = await engine.signal(run.id, "approve", {"by": "ada"})
        result = await engine.wait_result(run.id, timeout=10)

    assert (stored.name, stored.payload, stored.consumed_by) == ("approve", {"by": "ada"}, None)
    assert result.status == RunStatus.COMPLETED
    assert result.outputs["approve"] == {"by": "ada"}
    assert result.outputs["publish"] == "published by ada"
    assert recorder.names.index("signal_received") < recorder.names.index("workflow_resume")
    [received] = recorder.of("signal_received")
    assert (received.signal, received.payload) == ("approve", {"by": "ada"})


async def test_a_signal_sent_before_the_wait_is_kept_and_taken_when_the_wait_is_reached(
    engine: FluxEngine,
) -> None:
    suspensions = EventRecorder()
    engine.on("workflow_suspend", suspensions)
    run_id = await engine.start(approval)  # pending: no step has run yet

    await engine.signal(run_id, "approve", {"by": "grace"})
    async with engine.worker():
        result = await engine.wait_result(run_id, timeout=10)

    assert result.status == RunStatus.COMPLETED
    assert result.outputs["publish"] == "published by grace"
    assert suspensions.events == []  # the wait found its signal and never suspended


async def test_a_signal_sent_while_an_earlier_step_runs_is_not_lost(engine: FluxEngine) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def slow(ctx: StepContext[Any]) -> str:
        started.set()
        await release.wait()
        return "slow"

    flow = create_workflow("slow-then-wait").step("slow", slow).wait_for_signal("go")
    running = asyncio.create_task(engine.execute(flow))
    await started.wait()
    [run] = await engine.list(status="running")

    await engine.signal(run.id, "go", 42)
    release.set()
    result = await running

    assert result.status == RunStatus.COMPLETED
    assert result.outputs == {"slow": "slow", "go": 42}


async def test_the_signal_defaults_to_the_step_name_and_can_be_named(engine: FluxEngine) -> None:
    flow = create_workflow("named").wait_for_signal("manager", signal="manager-approved")
    run = await engine.execute(flow)

    with pytest.raises(UnknownSignalError, match="it can take: manager-approved"):
        await engine.signal(run.id, "manager")
    await engine.signal(run.id, "manager-approved", "yes")
    result = await engine.resume(run.id)

    assert result.outputs == {"manager": "yes"}


async def test_a_none_payload_completes_the_step_without_an_output(engine: FluxEngine) -> None:
    run = await engine.execute(create_workflow("ping").wait_for_signal("ping"))
    await engine.signal(run.id, "ping")
    result = await engine.resume(run.id)

    assert result.status == RunStatus.COMPLETED
    assert result.outputs == {}
    assert result.history[-1].status == StepStatus.COMPLETED


# --- what signal() refuses ----------------------------------------------------------------


async def test_a_wrong_signal_name_is_refused_listing_the_names_the_run_can_take(engine: FluxEngine) -> None:
    flow = create_workflow("two-waits").wait_for_signal("approve").wait_for_signal("review")
    run = await engine.execute(flow)

    with pytest.raises(UnknownSignalError, match=r"'aprove'.*it can take: approve, review") as caught:
        await engine.signal(run.id, "aprove")

    assert caught.value.run_id == run.id
    assert await engine.storage.list_signals(run.id) == []


async def test_a_signal_whose_wait_is_done_is_refused(engine: FluxEngine) -> None:
    flow = create_workflow("two-waits").wait_for_signal("approve").wait_for_signal("review")
    run = await engine.execute(flow)
    await engine.signal(run.id, "approve", 1)
    await engine.resume(run.id)  # takes "approve", suspends on "review"

    with pytest.raises(UnknownSignalError, match="it can take: review"):
        await engine.signal(run.id, "approve", 2)


async def test_a_duplicate_signal_is_refused_while_the_first_is_unconsumed(engine: FluxEngine) -> None:
    run_id = await engine.start(approval)
    await engine.signal(run_id, "approve", {"by": "first"})

    with pytest.raises(UnknownSignalError, match="already holds a signal 'approve'"):
        await engine.signal(run_id, "approve", {"by": "second"})

    async with engine.worker():
        result = await engine.wait_result(run_id, timeout=10)
    assert result.outputs["approve"] == {"by": "first"}


async def test_two_waits_for_one_signal_take_one_signal_each_in_order(engine: FluxEngine) -> None:
    flow = (
        create_workflow("ticks")
        .wait_for_signal("first", signal="tick")
        .wait_for_signal("second", signal="tick")
    )
    run_id = await engine.start(flow)

    await engine.signal(run_id, "tick", 1)
    await engine.signal(run_id, "tick", 2)
    with pytest.raises(UnknownSignalError, match="already holds"):
        await engine.signal(run_id, "tick", 3)
    async with engine.worker():
        result = await engine.wait_result(run_id, timeout=10)

    assert result.outputs == {"first": 1, "second": 2}
    assert [s.consumed_by for s in await engine.storage.list_signals(run_id)] == [0, 1]


@pytest.mark.parametrize("ending", ["completed", "cancelled"])
async def test_signals_to_finished_or_cancelled_runs_raise_a_clear_error(
    engine: FluxEngine, ending: str
) -> None:
    run = await engine.execute(approval)
    if ending == "completed":
        await engine.signal(run.id, "approve", {"by": "ada"})
        await engine.resume(run.id)
    else:
        await engine.cancel(run.id)

    with pytest.raises(
        InvalidRunStateError, match=f"run {run.id} is {ending}; signals can only go to unfinished"
    ):
        await engine.signal(run.id, "approve", {"by": "late"})


async def test_a_signal_to_an_unknown_run_raises_run_not_found(engine: FluxEngine) -> None:
    with pytest.raises(RunNotFoundError, match="no run with id 'nope'"):
        await engine.signal("nope", "approve")


async def test_a_payload_that_is_not_json_is_refused_before_it_is_stored(engine: FluxEngine) -> None:
    run = await engine.execute(approval)

    with pytest.raises(SerializationError, match="the payload of signal 'approve'"):
        await engine.signal(run.id, "approve", {"when": object()})
    assert await engine.storage.list_signals(run.id) == []


# --- durability ---------------------------------------------------------------------------


async def test_a_signal_survives_an_engine_restart(reopen: StorageFactory, clock: FakeClock) -> None:
    async with FluxEngine(storage=reopen(), clock=clock) as first:
        run_id = await first.start(approval)
        await first.signal(run_id, "approve", {"by": "linus"})

    async with FluxEngine(storage=reopen(), clock=clock, workflows=[approval]) as second, second.worker():
        result = await second.wait_result(run_id, timeout=10)

    assert result.status == RunStatus.COMPLETED
    assert result.outputs["publish"] == "published by linus"


async def test_a_waiting_run_is_resumed_by_a_new_engine(reopen: StorageFactory, clock: FakeClock) -> None:
    async with FluxEngine(storage=reopen(), clock=clock) as first:
        run = await first.execute(approval)
    assert run.status == RunStatus.SUSPENDED

    async with FluxEngine(storage=reopen(), clock=clock, workflows=[approval]) as second, second.worker():
        await second.signal(run.id, "approve", {"by": "barbara"})
        result = await second.wait_result(run.id, timeout=10)

    assert result.outputs["publish"] == "published by barbara"
    assert [r.step for r in result.history] == ["draft", "approve", "publish"]


# --- flux.wait in a handler ---------------------------------------------------------------


def ask_for_review(ctx: StepContext[Any]) -> WaitRequest:
    ctx.data["asked"] = True
    return flux.wait(f"review-{ctx.input['doc']}")


reviewed = (
    create_workflow("review").step("review", ask_for_review).step("after", lambda ctx: ctx.data["asked"])
)


async def test_a_handler_can_wait_for_a_signal_it_names(engine: FluxEngine) -> None:
    run = await engine.execute(reviewed, {"doc": "42"})
    assert run.status == RunStatus.SUSPENDED
    assert run.history[-1].waiting_for == "review-42"

    async with engine.worker():
        await engine.signal(run.id, "review-42", "lgtm")
        result = await engine.wait_result(run.id, timeout=10)

    assert result.outputs == {"review": "lgtm", "after": True}
    assert result.data == {"asked": True}  # data set before the wait is kept


async def test_a_dynamic_wait_takes_signals_only_while_the_run_waits_on_it(engine: FluxEngine) -> None:
    run_id = await engine.start(reviewed, {"doc": "7"})

    with pytest.raises(UnknownSignalError, match="it can take: none"):
        await engine.signal(run_id, "review-7", "too early")

    suspended = when(engine, "workflow_suspend")
    async with engine.worker():
        await suspended.wait()
        await engine.signal(run_id, "review-7", "on time")
        result = await engine.wait_result(run_id, timeout=10)
    assert result.outputs["review"] == "on time"


async def test_flux_wait_checks_its_arguments() -> None:
    assert flux.wait("approved", timeout=timedelta(minutes=1)) == WaitRequest(signal="approved", timeout=60.0)
    with pytest.raises(InvalidNameError, match="invalid signal name"):
        flux.wait("")
    with pytest.raises(ValueError, match="wait timeout must be a positive, finite number of seconds"):
        flux.wait("approved", timeout=0)


# --- timeouts -----------------------------------------------------------------------------


async def test_a_wait_timeout_fails_the_step_and_compensation_runs(
    engine: FluxEngine, clock: FakeClock
) -> None:
    undone: list[str] = []
    recorder = EventRecorder()
    engine.on("*", recorder)
    flow = (
        create_workflow("hold-then-approve")
        .step("hold", lambda ctx: "held", compensate=lambda ctx: undone.append("hold"))
        .wait_for_signal("approve", timeout=timedelta(hours=1))
    )
    run = await engine.execute(flow)
    waiting = run.history[-1]
    assert waiting.wake_at == clock.now() + timedelta(hours=1)

    async with engine.worker():
        await clock.advance(timedelta(hours=1, seconds=1))
        result = await engine.wait_result(run.id, timeout=10)

    assert result.status == RunStatus.ROLLED_BACK
    assert result.error is not None
    assert (result.error.type, result.error.step) == ("WaitTimeoutError", "approve")
    assert "waited for signal 'approve'" in result.error.message
    assert undone == ["hold"]
    assert recorder.of("step_retry") == []  # a wait timeout is not retried
    with pytest.raises(InvalidRunStateError):
        await engine.signal(run.id, "approve")


async def test_a_signal_within_the_timeout_wins(engine: FluxEngine, clock: FakeClock) -> None:
    flow = create_workflow("quick").wait_for_signal("approve", timeout=60).step("done", lambda ctx: "ok")
    run = await engine.execute(flow)

    async with engine.worker():
        await clock.advance(59)
        await engine.signal(run.id, "approve", "yes")
        result = await engine.wait_result(run.id, timeout=10)
        await clock.advance(3600)

    assert result.status == RunStatus.COMPLETED
    assert (await engine.get(run.id)).outputs == {"approve": "yes", "done": "ok"}


async def test_a_handler_wait_timeout_is_not_retried(engine: FluxEngine, clock: FakeClock) -> None:
    calls: list[int] = []

    def ask(ctx: StepContext[Any]) -> WaitRequest:
        calls.append(ctx.attempt)
        return flux.wait("answer", timeout=30)

    recorder = EventRecorder()
    engine.on("*", recorder)
    run = await engine.execute(create_workflow("ask").step("ask", ask, retries=5))

    async with engine.worker():
        await clock.advance(31)
        result = await engine.wait_result(run.id, timeout=10)

    assert result.status == RunStatus.FAILED
    assert result.error is not None and result.error.type == WaitTimeoutError.__name__
    assert calls == [1]
    assert recorder.of("step_retry") == []


async def test_a_signal_stored_before_the_timeout_is_acted_on_wins(
    engine: FluxEngine, clock: FakeClock
) -> None:
    """The timeout is decided when the run is next driven: a signal stored by then is taken."""
    run = await engine.execute(create_workflow("late-but-stored").wait_for_signal("approve", timeout=60))
    await clock.advance(61)  # no worker: nobody has failed the step yet

    await engine.signal(run.id, "approve", "just in time")
    result = await engine.resume(run.id)

    assert result.status == RunStatus.COMPLETED
    assert result.outputs == {"approve": "just in time"}
