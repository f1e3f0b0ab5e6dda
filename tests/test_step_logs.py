"""Stored step logs: ctx.log lines kept with the step record, bounded, on both backends."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from flux import FluxEngine, LogLimits, RetryPolicy, StepContext, create_workflow
from flux.storage import Storage
from flux.testing import FakeClock


def chatty(ctx: StepContext[Any]) -> str:
    ctx.log.info("charging %s", "A-1")
    ctx.log.warning("slow card network")
    return "ok"


async def test_log_lines_are_kept_with_the_step_record(storage: Storage, clock: FakeClock) -> None:
    flow = create_workflow("logs").step("charge", chatty).step("quiet", lambda ctx: 1)
    async with FluxEngine(storage, clock=clock) as engine:
        result = await engine.execute(flow)
        stored = await engine.get(result.id)
    for history in (result.history, stored.history):
        charge, quiet = history
        assert [(line.level, line.message) for line in charge.logs] == [
            ("info", "charging A-1"),
            ("warning", "slow card network"),
        ]
        assert all(line.time == clock.now() for line in charge.logs)
        assert quiet.logs == ()


async def test_lines_are_kept_whatever_the_logging_configuration(
    storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL, logger="flux.step")  # nothing below critical is emitted
    async with FluxEngine(storage, clock=FakeClock()) as engine:
        result = await engine.execute(create_workflow("q").step("s", chatty))
    assert [line.message for line in result.history[0].logs] == ["charging A-1", "slow card network"]
    assert not [r for r in caplog.records if r.name == "flux.step"]


async def test_every_attempt_adds_its_lines_and_errors_name_the_exception(storage: Storage) -> None:
    async def flaky(ctx: StepContext[Any]) -> str:
        try:
            raise ConnectionError(f"refused {ctx.attempt}")
        except ConnectionError:
            if ctx.attempt < 3:
                ctx.log.exception("attempt %d failed", ctx.attempt)
                raise
        return "done"

    flow = create_workflow("retrying").step("call", flaky, retries=3, retry=RetryPolicy(jitter=0))
    async with FluxEngine(storage, clock=FakeClock()) as engine:
        result = await engine.execute(flow)
    assert result.status == "completed"
    assert [(line.level, line.message) for line in result.history[0].logs] == [
        ("error", "attempt 1 failed (ConnectionError: refused 1)"),
        ("error", "attempt 2 failed (ConnectionError: refused 2)"),
    ]


async def test_lines_past_the_limit_are_counted_and_long_lines_cut(storage: Storage) -> None:
    def flood(ctx: StepContext[Any]) -> None:
        ctx.log.info("é" * 40)  # 80 bytes in UTF-8
        for i in range(9):
            ctx.log.info("line %d", i)

    limits = LogLimits(lines=3, line_bytes=21)
    async with FluxEngine(storage, clock=FakeClock(), log_limits=limits) as engine:
        result = await engine.execute(create_workflow("flood").step("s", flood))
    logs = result.history[0].logs
    assert [line.message for line in logs] == [
        "é" * 10 + "… [flux: cut, 80 bytes in all]",
        "line 0",
        "line 1",
        "[flux: 7 more lines not kept; at most 3 lines are kept per step]",
    ]
    assert logs[-1].level == "warning"


async def test_a_resumed_visit_keeps_the_lines_logged_before_it_stopped(storage: Storage) -> None:
    def waits(ctx: StepContext[Any]) -> Any:
        from flux import wait

        ctx.log.info("asked for approval (attempt %d)", ctx.attempt)
        return wait("approve")

    def after(ctx: StepContext[Any]) -> None:
        ctx.log.info("approved by %s", ctx.outputs["ask"])

    flow = create_workflow("resume").step("ask", waits).step("act", after)
    async with FluxEngine(storage, clock=FakeClock()) as engine:
        first = await engine.execute(flow)
        assert first.status == "suspended"
        await engine.signal(first.id, "approve", "ada")
        done = await engine.resume(first.id)
    assert done.status == "completed"
    assert [line.message for line in done.history[0].logs] == ["asked for approval (attempt 1)"]
    assert [line.message for line in done.history[1].logs] == ["approved by ada"]


@pytest.mark.parametrize(("field", "value"), [("lines", -1), ("line_bytes", 1.5), ("lines", True)])
def test_bad_limits_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"LogLimits\({field}=...\) must be an int >= 0"):
        LogLimits(**{field: value})  # type: ignore[arg-type]


async def test_steps_of_a_parallel_group_keep_their_own_lines(storage: Storage) -> None:
    left = create_workflow("left").step("a", lambda ctx: ctx.log.info("from a"))
    right = create_workflow("right").step("b", lambda ctx: ctx.log.error("from b"))
    flow = create_workflow("fan").parallel("both", left, right)
    async with FluxEngine(storage, clock=FakeClock()) as engine:
        result = await engine.execute(flow)
    logs = {record.step: [(line.level, line.message) for line in record.logs] for record in result.history}
    assert logs["a"] == [("info", "from a")]
    assert logs["b"] == [("error", "from b")]
    assert logs["both"] == []
