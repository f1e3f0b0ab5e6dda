"""How a RunResult shows itself: a one-line repr, a multi-line summary()."""

from __future__ import annotations

from typing import Any

from flux import FluxEngine, StepContext, create_workflow
from flux.testing import FakeClock


def charge(ctx: StepContext[Any]) -> None:
    raise ConnectionError("payment gateway down")


def refund(ctx: StepContext[Any]) -> None:
    raise RuntimeError("refund API down")


async def test_repr_is_one_line_with_a_short_id_the_status_the_steps_and_the_duration() -> None:
    clock = FakeClock()
    flow = create_workflow("order").step("a", lambda ctx: 1).step("b", lambda ctx: 2).step("c", lambda ctx: 3)
    async with FluxEngine(clock=clock) as engine:
        result = await engine.execute(flow)
    assert repr(result) == f"<RunResult {result.id[:4]}… order completed 3 steps 0.00s>"
    assert len(result.id) == 32  # the full id stays in .id


async def test_repr_of_a_short_chosen_id_and_an_unfinished_run() -> None:
    async with FluxEngine(clock=FakeClock()) as engine:
        waiting = await engine.execute(create_workflow("approval").wait_for_signal("ok"), run_id="order-77")
    assert repr(waiting) == "<RunResult order-77 approval suspended 1 step>"


async def test_summary_shows_status_each_step_with_its_duration_and_the_errors() -> None:
    clock = FakeClock()
    flow = (
        create_workflow("order")
        .step("fetch", lambda ctx: 1, compensate=refund)
        .step("notify-vip", lambda ctx: 1, when=lambda ctx: False)
        .step("charge", charge, retries=2)
    )
    async with FluxEngine(clock=clock) as engine:
        result = await engine.execute(flow)
    lines = result.summary().splitlines()
    assert lines[0] == f"run {result.id} (workflow 'order'): failed after {result.duration:.2f}s"
    assert lines[1].split() == ["completed", "fetch", "0.000s"]
    assert lines[2].split() == ["skipped", "notify-vip", "0.000s"]
    charged = result.history[2].duration
    assert charged is not None and charged > 0  # the retry delays, on the fake clock
    assert lines[3].split() == ["failed", "charge", f"{charged:.3f}s", "3", "attempts"]
    assert lines[4] == "error in step 'charge' (attempt 3): ConnectionError: payment gateway down"
    # A compensation's error names its attempt, like a step's (one attempt loop records both).
    assert (
        lines[5] == "and its compensation failed in step 'fetch' (attempt 4): RuntimeError: refund API down"
    )
    assert len(lines) == 6


async def test_summary_of_a_suspended_run_has_no_duration_where_none_is_known() -> None:
    async with FluxEngine(clock=FakeClock()) as engine:
        result = await engine.execute(
            create_workflow("wait").step("a", lambda ctx: 1).wait_for_signal("approve")
        )
    assert result.summary().splitlines() == [
        f"run {result.id} (workflow 'wait'): suspended",
        "  completed  a          0.000s",
        "  suspended  approve",
    ]
