"""flux.testing.run_workflow: mocks, signals, skipped time, and the WorkflowTest assertions."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest
from suspending import suspended_run

from flux import FluxEngine, MemoryStorage, RetryPolicy, StepContext, create_workflow
from flux.storage import SQLiteStorage
from flux.testing import FakeClock, WorkflowTest, run_workflow, run_workflow_sync


@attrs.frozen
class Order:
    order_id: str
    amount: float


def fetch(ctx: StepContext[Order]) -> dict[str, Any]:
    ctx.data["order"] = {"id": ctx.input.order_id, "amount": ctx.input.amount}
    return {"id": ctx.input.order_id}


async def charge(ctx: StepContext[Order]) -> dict[str, Any]:
    raise AssertionError("the real charge must not run in these tests")


def notify(ctx: StepContext[Order]) -> str:
    ctx.data["notified"] = True
    return f"sent {ctx.outputs['charge']['id']}"


ORDER = (
    create_workflow("order")
    .input(Order)
    .step("fetch", fetch)
    .step("charge", charge, retries=2, retry=RetryPolicy(initial_delay=60, jitter=0))
    .step("notify", notify)
    .build()
)
INPUT = Order(order_id="A-1", amount=9.5)


def fails_with(check: Any, *fragments: str) -> str:
    """Run ``check``; assert it raises AssertionError whose message holds every fragment."""
    with pytest.raises(AssertionError) as caught:
        check()
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


# --- mocks ------------------------------------------------------------------------------------


async def test_a_value_mock_replaces_the_output() -> None:
    test = await run_workflow(ORDER, INPUT, mocks={"charge": {"id": "ch_1"}})
    test.assert_completed()
    test.assert_output("charge", {"id": "ch_1"})
    test.assert_output("notify", "sent ch_1")
    test.assert_data(notified=True)
    test.assert_step_called("charge", times=1)


async def test_a_callable_mock_replaces_the_handler_and_sees_the_context() -> None:
    seen: list[int] = []

    def fake_charge(ctx: StepContext[Order]) -> dict[str, Any]:
        seen.append(ctx.attempt)
        return {"id": f"ch_{ctx.input.order_id}", "amount": ctx.data["order"]["amount"]}

    test = await run_workflow(ORDER, INPUT, mocks={"charge": fake_charge})
    test.assert_completed()
    test.assert_output("charge", {"id": "ch_A-1", "amount": 9.5})
    assert seen == [1]
    (call,) = test.calls("charge")
    assert (call.step, call.attempt, call.input) == ("charge", 1, INPUT)
    assert call.data == {"order": {"id": "A-1", "amount": 9.5}}
    assert call.run_id == test.result.id


async def test_an_async_callable_mock_works_too() -> None:
    async def fake_charge(ctx: StepContext[Order]) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"id": "ch_async"}

    test = await run_workflow(ORDER, INPUT, mocks={"charge": fake_charge})
    test.assert_output("notify", "sent ch_async")


async def test_an_exception_mock_raises_on_every_attempt_and_retries_take_no_time() -> None:
    started = time.monotonic()
    test = await run_workflow(ORDER, INPUT, mocks={"charge": ConnectionError("card network down")})
    assert time.monotonic() - started < 5  # two 60 s and 120 s retry delays were skipped
    test.assert_failed(step="charge", error=ConnectionError)
    test.assert_failed(error="card network down")
    test.assert_step_called("charge", times=3)
    assert [call.attempt for call in test.calls("charge")] == [1, 2, 3]
    test.assert_step_not_called("notify")
    test.assert_events(["step_retry", "step_retry", ("step_error", "charge"), "workflow_error"])


async def test_a_mock_can_fail_then_succeed() -> None:
    def flaky(ctx: StepContext[Order]) -> dict[str, Any]:
        if ctx.attempt < 3:
            raise TimeoutError("try again")
        return {"id": "ch_3"}

    test = await run_workflow(ORDER, INPUT, mocks={"charge": flaky})
    test.assert_completed()
    test.assert_step_called("charge", times=3)
    delays = [event.delay for event in test.events.of("step_retry")]
    assert delays == [60.0, 60.0]  # the backoff (capped at its max delay), skipped in fake time
    assert test.result.duration == sum(delays)


async def test_steps_nested_in_a_parallel_group_can_be_mocked() -> None:
    left = create_workflow("left").step("a", lambda ctx: "real a")
    right = create_workflow("right").step("b", lambda ctx: "real b")
    flow = create_workflow("fan").parallel("both", left, right).step("end", lambda ctx: dict(ctx.outputs))
    test = await run_workflow(flow, mocks={"b": "mocked b"})
    test.assert_completed()
    test.assert_output("a", "real a")
    test.assert_output("b", "mocked b")
    test.assert_step_called("a", times=1)


async def test_a_child_step_can_be_mocked_instead_of_running_the_child() -> None:
    child = create_workflow("child").step("work", lambda ctx: "child output")
    flow = create_workflow("parent").child("sub", child).step("use", lambda ctx: ctx.outputs["sub"])
    test = await run_workflow(flow, mocks={"sub": {"pretend": True}})
    test.assert_completed()
    test.assert_output("use", {"pretend": True})


@pytest.mark.parametrize(
    ("mocks", "error", "message"),
    [
        ({"nope": 1}, ValueError, "lacks; its steps: charge, fetch, notify"),
        ({"charge": ValueError}, TypeError, "pass an instance, ValueError('...')"),
    ],
    ids=["unknown-step", "exception-class"],
)
async def test_bad_mocks_are_refused_with_a_fix(
    mocks: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=r".*") as caught:
        await run_workflow(ORDER, INPUT, mocks=mocks)
    assert message in str(caught.value)


async def test_a_wait_step_cannot_be_mocked() -> None:
    flow = create_workflow("w").wait_for_signal("approval", signal="approve")
    with pytest.raises(ValueError, match="send its signal with signals= instead"):
        await run_workflow(flow, mocks={"approval": 1})


# --- signals and time -------------------------------------------------------------------------


APPROVAL = (
    create_workflow("approval")
    .step("ask", lambda ctx: "asked")
    .wait_for_signal("decision", signal="approve", timeout=3 * 86_400)
    .step("act", lambda ctx: f"approved by {ctx.outputs['decision']['by']}")
    .build()
)


async def test_a_signal_is_delivered_when_the_run_waits_for_it() -> None:
    test = await run_workflow(APPROVAL, signals={"approve": {"by": "ada"}})
    test.assert_completed()
    test.assert_output("decision", {"by": "ada"})
    test.assert_output("act", "approved by ada")
    test.assert_events(["workflow_suspend", "signal_received", "workflow_resume", "workflow_complete"])


async def test_without_its_signal_a_wait_times_out_at_once() -> None:
    started = time.monotonic()
    test = await run_workflow(APPROVAL)
    assert time.monotonic() - started < 5
    test.assert_failed(step="decision", error="WaitTimeoutError")
    assert test.result.created_at is not None
    assert test.clock.now() - test.result.created_at == timedelta(days=3)


async def test_a_run_waiting_forever_stays_suspended_and_says_why() -> None:
    flow = create_workflow("forever").wait_for_signal("decision", signal="approve")
    test = await run_workflow(flow)
    test.assert_status("suspended")
    fails_with(test.assert_completed, "expected the run to complete, but it is suspended",
               "waiting for signal 'approve' (pass it in signals={...})")  # fmt: skip


async def test_a_seven_day_sleep_takes_milliseconds() -> None:
    clock = FakeClock()
    start = clock.now()
    flow = create_workflow("week").step("a", lambda ctx: 1).sleep("nap", 7 * 86_400).step("b", lambda ctx: 2)
    started = time.monotonic()
    test = await run_workflow(flow, clock=clock)
    elapsed = time.monotonic() - started
    test.assert_completed()
    assert elapsed < 2, elapsed
    assert (clock.now() - start).days == 7
    test.assert_events(["workflow_suspend", "workflow_resume", ("step_complete", "b")])


async def test_a_hanging_async_attempt_times_out_without_real_waiting() -> None:
    async def hangs(ctx: StepContext[None]) -> None:
        await asyncio.Event().wait()

    flow = create_workflow("stuck").step("hang", hangs, timeout=600, retries=1)
    started = time.monotonic()
    test = await run_workflow(flow)
    assert time.monotonic() - started < 5
    test.assert_failed(step="hang", error="timed out after 600s")
    test.assert_step_called("hang", times=2)


async def test_run_workflow_on_sqlite(tmp_path: Path) -> None:
    storage = SQLiteStorage(tmp_path / "flux.db")
    test = await run_workflow(APPROVAL, storage=storage, signals={"approve": {"by": "bo"}})
    test.assert_completed()
    async with SQLiteStorage(tmp_path / "flux.db") as again:
        stored = await again.load(test.result.id)
    assert stored is not None and stored.status == "completed"


def test_run_workflow_sync_runs_without_a_loop() -> None:
    test = run_workflow_sync(ORDER, INPUT, mocks={"charge": {"id": "ch_sync"}})
    test.assert_completed()
    assert isinstance(test, WorkflowTest)


async def test_run_workflow_sync_refuses_a_running_loop() -> None:
    with pytest.raises(RuntimeError, match="use 'await run_workflow"):
        run_workflow_sync(ORDER, INPUT)


# --- assertions fail with readable messages ---------------------------------------------------


@pytest.fixture
async def done() -> WorkflowTest:
    return await run_workflow(ORDER, INPUT, mocks={"charge": {"id": "ch_1"}})


async def test_failing_status_assertions(done: WorkflowTest) -> None:
    done.assert_status("completed")
    fails_with(lambda: done.assert_status("failed"), "expected the run to be failed, but it is completed")
    fails_with(done.assert_failed, "expected the run to fail, but it is completed")


async def test_failing_failure_assertions() -> None:
    test = await run_workflow(ORDER, INPUT, mocks={"charge": KeyError("card")})
    fails_with(test.assert_completed, "it is failed in step 'charge': KeyError: 'card'")
    fails_with(lambda: test.assert_failed(step="notify"), "expected step 'notify' to fail",
               "failed in step 'charge'")  # fmt: skip
    fails_with(lambda: test.assert_failed(error=ValueError), "expected a ValueError", "KeyError")
    fails_with(lambda: test.assert_failed(error="declined"), "containing 'declined'")


async def test_failing_call_assertions(done: WorkflowTest) -> None:
    fails_with(lambda: done.assert_step_called("charge", times=2),
               "expected step 'charge' to be called 2 time(s), but it was called 1 time(s)")  # fmt: skip
    fails_with(lambda: done.assert_step_not_called("fetch"), "not to be called, but it was called 1 time(s)")
    test = await run_workflow(ORDER, INPUT, mocks={"fetch": ValueError("x")})
    fails_with(lambda: test.assert_step_called("notify"), "it never was; steps called: fetch")
    with pytest.raises(ValueError, match="has no step 'nope'; its steps: charge, fetch, notify"):
        done.assert_step_called("nope")


async def test_failing_data_and_output_assertions_show_a_diff(done: WorkflowTest) -> None:
    done.assert_data(order={"id": "A-1", "amount": 9.5})
    message = fails_with(
        lambda: done.assert_data(order={"id": "A-2", "amount": 9.5}, missing=1),
        "ctx.data does not match (missing: missing)",
        "--- expected",
        "+++ actual",
    )
    assert "-{'missing': 1, 'order': {'amount': 9.5, 'id': 'A-2'}}" in message
    fails_with(lambda: done.assert_output("notify", "sent ch_2"),
               "output of step 'notify' does not match", "-'sent ch_2'", "+'sent ch_1'")  # fmt: skip
    test = await run_workflow(ORDER, INPUT, mocks={"charge": ValueError("no")})
    fails_with(lambda: test.assert_output("notify", 1), "step 'notify' has no output")


async def test_failing_event_assertions_list_what_happened(done: WorkflowTest) -> None:
    done.assert_events(["workflow_start", ("step_start", "charge"), "workflow_complete"])
    message = fails_with(lambda: done.assert_events(["workflow_complete", "step_start"]),
                         "event 'step_start' (item 1 of", "The events, in order:")  # fmt: skip
    assert "  step_complete (notify)" in message
    fails_with(lambda: done.assert_events([("step_retry", "charge")]), "('step_retry', 'charge')")


async def test_an_unknown_event_name_is_refused(done: WorkflowTest) -> None:
    with pytest.raises(
        ValueError, match="'step_compelte' is not an event name; use one of: rollback_complete"
    ):
        done.assert_events(["step_compelte"])


async def test_a_child_run_gets_its_signal_and_its_timer_too() -> None:
    child = (
        create_workflow("review")
        .sleep("cool-off", 86_400)
        .wait_for_signal("verdict", signal="reviewed")
        .step("report", lambda ctx: ctx.outputs["verdict"])
    )
    flow = create_workflow("submit").child("review", child).step("after", lambda ctx: ctx.outputs["review"])
    test = await run_workflow(flow, signals={"reviewed": "accepted"})
    test.assert_completed()
    assert test.result.outputs["after"]["outputs"]["report"] == "accepted"  # the child's result
    assert test.result.duration == 86_400


async def test_other_runs_in_the_store_are_left_alone() -> None:
    storage = MemoryStorage()
    other = create_workflow("other").sleep("nap", 3600).step("a", lambda ctx: 1)
    async with FluxEngine(storage, clock=FakeClock()) as engine:
        parked = await suspended_run(engine, other)  # execute would wait the hour out itself
    assert parked.status == "suspended"
    test = await run_workflow(APPROVAL, storage=storage)  # its clock passes the parked run's due time
    test.assert_failed(step="decision", error="WaitTimeoutError")
    stored = await storage.load(parked.id)
    assert stored is not None and stored.status == "suspended"


async def test_calls_of_a_step_without_handler_are_refused() -> None:
    test = await run_workflow(APPROVAL, signals={"approve": {"by": "di"}})
    with pytest.raises(ValueError, match="'decision' is a wait step: it has no handler"):
        test.assert_step_called("decision")
