"""Durations: one helper reads seconds or a timedelta everywhere, and refuses NaN, infinity,
negatives and values that would overflow a datetime where they are given, naming the argument
and the largest value allowed (they used to raise a raw OverflowError inside a run)."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import flux
from flux import (
    FluxEngine,
    InvalidStepError,
    RetryAfter,
    RunStatus,
    StepContext,
    create_workflow,
)
from flux._duration import MAX_SECONDS, to_count, to_seconds, to_timedelta
from flux.storage import MemoryStorage, SQLiteStorage
from flux.testing import FakeClock

LIMIT = r"at most 3153600000 seconds \(100 years\)"


# --- the helper -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "zero", "expected"),
    [
        (1, False, 1.0),
        (2.5, False, 2.5),
        (timedelta(minutes=2), False, 120.0),
        (0, True, 0.0),
        (timedelta(0), True, 0.0),
        (MAX_SECONDS, False, float(MAX_SECONDS)),
    ],
)
def test_to_seconds_accepts_numbers_and_timedeltas(value: Any, zero: bool, expected: float) -> None:
    assert to_seconds(value, "x", zero=zero) == expected
    assert to_timedelta(value, "x", zero=zero) == timedelta(seconds=expected)


@pytest.mark.parametrize(
    "value",
    [
        math.nan, math.inf, -math.inf, -1, -0.001, 0, timedelta(seconds=-1), MAX_SECONDS + 1,
        1e12, 10**400, timedelta(days=999_999_999), True, "30", None, [1],
    ],
    ids=repr,
)  # fmt: skip
def test_to_seconds_refuses_what_cannot_be_a_duration(value: Any) -> None:
    """Bad input: NaN, +-inf, negatives, 0 (where not allowed), more than 100 years (1e12,
    10**400, the largest timedelta), a bool, a str, None, a list."""
    with pytest.raises(InvalidStepError, match=rf"^the_arg must be a positive, finite .*{LIMIT}; got "):
        to_seconds(value, "the_arg", error=InvalidStepError)


@pytest.mark.parametrize("value", [2.5, math.nan, math.inf, True, -1, "2"], ids=repr)
def test_to_count_refuses_non_integers(value: Any) -> None:
    with pytest.raises(ValueError, match=r"^n must be an int >= 0 \(not a bool or float\); got "):
        to_count(value, "n", minimum=0)


# --- every place a duration is given ------------------------------------------------------------


def noop(ctx: StepContext[Any]) -> None:
    return None


PLAN_PLACES: list[tuple[str, Callable[[], Any]]] = [
    ("step timeout 10**400", lambda: create_workflow("w").step("a", noop, timeout=10**400)),
    ("step timeout inf", lambda: create_workflow("w").step("a", noop, timeout=math.inf)),
    ("commit timeout nan", lambda: create_workflow("w").commit("a", noop, timeout=math.nan)),
    ("wait_for_signal timeout inf", lambda: create_workflow("w").wait_for_signal("a", timeout=math.inf)),
    ("sleep 1e12", lambda: create_workflow("w").sleep("a", 1e12)),
    ("sleep -1", lambda: create_workflow("w").sleep("a", -1)),
    ("sleep nan", lambda: create_workflow("w").sleep("a", math.nan)),
    ("deadline inf", lambda: create_workflow("w").step("a", noop).deadline(math.inf)),
    ("deadline timedelta.max", lambda: create_workflow("w").step("a", noop).deadline(timedelta.max)),
]


@pytest.mark.parametrize(("what", "build"), PLAN_PLACES, ids=[p[0] for p in PLAN_PLACES])
def test_plan_durations_are_refused_where_given(what: str, build: Callable[[], Any]) -> None:
    """Bad input: each of the plan durations above. InvalidStepError names the step and argument."""
    with pytest.raises(InvalidStepError, match=rf"(step 'a'|workflow 'w'): .* must be .*{LIMIT}"):
        build()


RUNTIME_PLACES: list[tuple[str, Callable[[], Any], str]] = [
    ("RetryAfter(inf)", lambda: RetryAfter(math.inf), "RetryAfter delay"),
    ("RetryAfter(nan)", lambda: RetryAfter(math.nan), "RetryAfter delay"),
    ("flux.wait timeout inf", lambda: flux.wait("go", timeout=math.inf), "wait timeout"),
    ("FluxEngine(lease=inf)", lambda: FluxEngine(lease=math.inf), "lease"),
    ("FluxEngine(default_timeout=inf)", lambda: FluxEngine(default_timeout=math.inf), "default_timeout"),
    ("FluxEngine(durable_after=nan)", lambda: FluxEngine(durable_after=math.nan), "durable_after"),
    ("FluxEngine(durable_after=-1)", lambda: FluxEngine(durable_after=-1), "durable_after"),
    ("FluxEngine(poll_interval=0)", lambda: FluxEngine(poll_interval=0), "poll_interval"),
    ("FluxEngine(poll_interval=-1)", lambda: FluxEngine(poll_interval=-1), "poll_interval"),
    ("FluxEngine(poll_interval=nan)", lambda: FluxEngine(poll_interval=math.nan), "poll_interval"),
    ("SQLiteStorage(busy_timeout=inf)", lambda: SQLiteStorage(busy_timeout=math.inf), "busy_timeout"),
    ("Worker(grace_period=inf)", lambda: FluxEngine().worker(grace_period=math.inf), "grace_period"),
]


@pytest.mark.parametrize(("what", "make", "name"), RUNTIME_PLACES, ids=[p[0] for p in RUNTIME_PLACES])
def test_runtime_durations_are_refused_where_given(what: str, make: Callable[[], Any], name: str) -> None:
    """Bad input: each of the values above, which used to be accepted (an idle worker
    busy-looped on poll_interval=0) or overflowed later inside a run."""
    with pytest.raises(ValueError, match=rf"^{name} must be .*{LIMIT}; got "):
        make()


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"deadline": math.inf}, "deadline"),
        ({"deadline": 1e12}, "deadline"),
        ({"idempotency_key": "k", "idempotency_ttl": math.inf}, "idempotency_ttl"),
        ({"idempotency_key": "k", "idempotency_ttl": math.nan}, "idempotency_ttl"),
    ],
)
async def test_execute_durations_are_refused_before_anything_is_stored(
    options: dict[str, Any], name: str
) -> None:
    """Bad input: ``execute(deadline=inf | 1e12)``, ``idempotency_ttl=inf | nan``."""
    storage = MemoryStorage()
    async with FluxEngine(storage, clock=FakeClock()) as engine:
        with pytest.raises(ValueError, match=rf"^{name} must be .*{LIMIT}"):
            await engine.execute(create_workflow("w").step("a", noop), **options)
        assert await storage.list() == []


async def test_wait_result_timeout_nan_is_refused() -> None:
    async with FluxEngine(clock=FakeClock()) as engine:
        run_id = await engine.start(create_workflow("w").step("a", noop))
        with pytest.raises(ValueError, match=r"^timeout must be a non-negative"):
            await engine.wait_result(run_id, timeout=math.nan)


async def test_a_handler_raising_retry_after_inf_fails_its_step_instead_of_stranding(tmp_path: Path) -> None:
    """Bad input: a handler raises ``RetryAfter(math.inf)``. Its due time used to overflow and
    leave the run ``running``; now building the RetryAfter raises ValueError, which fails the
    step (not retryable) and ends the run ``failed`` with that message."""

    def impatient(ctx: StepContext[Any]) -> None:
        raise RetryAfter(math.inf)

    async with FluxEngine(SQLiteStorage(tmp_path / "flux.db"), clock=FakeClock()) as engine:
        result = await engine.execute(create_workflow("w").step("a", impatient, retries=3))
        assert result.status == RunStatus.FAILED
        assert result.error is not None and result.error.type == "ValueError"
        assert "RetryAfter delay must be a non-negative" in result.error.message
        assert (await engine.get(result.id)).status == RunStatus.FAILED
