"""Retry policies: the pure maths, with_retry, and how the engine applies retries per step."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flux import (
    FluxEngine,
    InvalidInputError,
    NonRetryableError,
    RetryAfter,
    RetryPolicy,
    SerializationError,
    StepContext,
    StepTimeoutError,
    create_workflow,
    is_retryable_error,
    with_retry,
)
from flux.testing import EventRecorder, FakeClock

# --- presets and validation ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "attempts", "initial"),
    [
        (RetryPolicy.NONE, 1, 1.0),
        (RetryPolicy.FAST, 3, 1.0),
        (RetryPolicy.STANDARD, 3, 2.0),
        (RetryPolicy.AGGRESSIVE, 5, 2.0),
        (RetryPolicy.PATIENT, 10, 5.0),
    ],
)
def test_presets(policy: RetryPolicy, attempts: int, initial: float) -> None:
    assert (policy.max_attempts, policy.initial_delay) == (attempts, initial)


def test_policy_is_frozen() -> None:
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        RetryPolicy.FAST.max_attempts = 7  # type: ignore[misc]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_attempts": 0}, r"max_attempts must be an int >= 1"),
        ({"initial_delay": -1}, r"initial_delay must be a non-negative, finite number"),
        ({"max_delay": -1}, r"max_delay must be a non-negative, finite number"),
        ({"backoff_multiplier": 0.5}, "backoff_multiplier must be a finite number >= 1"),
        ({"jitter": 1.5}, "jitter must be a fraction"),
        ({"jitter": -0.1}, "jitter must be a fraction"),
    ],
)
def test_invalid_policies_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**options)


@pytest.mark.parametrize("attempts", [math.nan, math.inf, 2.5, 3.0, True, "3", None])
def test_attempt_counts_that_never_end_are_refused(attempts: Any) -> None:
    """Bad input: ``RetryPolicy(max_attempts=nan | inf | 2.5 | 3.0 | True | "3" | None)``.
    nan and inf used to be accepted and retried forever. Only ints >= 1 are taken."""
    with pytest.raises(ValueError, match=r"max_attempts must be an int >= 1 \(not a bool or float\); got"):
        RetryPolicy(max_attempts=attempts)


@pytest.mark.parametrize("retries", [math.nan, math.inf, -1, 1.5, False])
def test_engine_default_retries_must_be_a_count(retries: Any) -> None:
    """Bad input: ``FluxEngine(default_retries=nan | inf | -1 | 1.5 | False)``: refused."""
    with pytest.raises(ValueError, match=r"default_retries must be an int >= 0"):
        FluxEngine(default_retries=retries)


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"max_delay": math.inf}, "max_delay"),
        ({"max_delay": 1e12}, "max_delay"),
        ({"initial_delay": math.nan}, "initial_delay"),
        ({"initial_delay": 10**400}, "initial_delay"),
    ],
)
def test_delays_that_overflow_a_datetime_are_refused(options: dict[str, Any], name: str) -> None:
    """Bad input: ``max_delay=inf`` (a backoff beyond ~2.5e11 s overflowed the due time at run
    time), ``1e12``, ``initial_delay=nan`` or ``10**400``. Refused, naming the largest value."""
    with pytest.raises(ValueError, match=rf"{name} must be .*at most 3153600000 seconds \(100 years\)"):
        RetryPolicy(**options)


def test_retry_on_and_give_up_on_take_exception_classes_only() -> None:
    with pytest.raises(TypeError, match="expected exception classes"):
        RetryPolicy(retry_on=("ConnectionError",))
    assert RetryPolicy(give_up_on=KeyError).give_up_on == (KeyError,)


def test_delay_table_without_jitter() -> None:
    policy = RetryPolicy(initial_delay=1, backoff_multiplier=2, max_delay=10, jitter=0)
    assert [policy.delay_for(n) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]


def test_with_retries_sets_the_attempt_count_only() -> None:
    policy = RetryPolicy.PATIENT.with_retries(2)
    assert policy.max_attempts == 3
    assert attrs.evolve(policy, max_attempts=10) == RetryPolicy.PATIENT


# --- which errors retry -------------------------------------------------------------------


class HttpError(Exception):
    def __init__(self, status_code: int) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code


class Response:
    def __init__(self, status_code: int) -> None:
        self.status_code = status_code


class ClientError(Exception):
    """Carries its status on ``.response``, like httpx and requests errors."""

    def __init__(self, status_code: int) -> None:
        super().__init__(f"HTTP {status_code}")
        self.response = Response(status_code)


@pytest.mark.parametrize(
    "exc",
    [
        TimeoutError(),
        TimeoutError(),
        StepTimeoutError("slow", step="s", attempt=1),
        ConnectionError(),
        ConnectionResetError(),
        HttpError(500),
        HttpError(503),
        HttpError(429),
        HttpError(408),
        ClientError(502),
        RetryAfter(3),
        RuntimeError("unknown errors get another chance"),
    ],
    ids=repr,
)
def test_retryable_errors(exc: BaseException) -> None:
    assert is_retryable_error(exc)


@pytest.mark.parametrize(
    "exc",
    [
        ValueError(),
        TypeError(),
        KeyError("k"),
        AttributeError(),
        HttpError(400),
        HttpError(404),
        HttpError(422),
        ClientError(401),
        NonRetryableError("stop"),
        SerializationError("not JSON"),
        InvalidInputError("bad input"),
        NameError("name 'totl' is not defined"),
        UnboundLocalError("cannot access local variable 'x'"),
        ImportError("cannot import name 'x'"),
        ModuleNotFoundError("No module named 'stripe'"),
        SyntaxError("invalid syntax"),
        AssertionError(),
        NotImplementedError(),
    ],
    ids=repr,
)
def test_non_retryable_errors(exc: BaseException) -> None:
    assert not is_retryable_error(exc)


def test_should_retry_honours_the_attempt_budget_and_the_error_lists() -> None:
    policy = RetryPolicy(max_attempts=3, retry_on=(KeyError,), give_up_on=(LookupError,))
    # give_up_on wins over retry_on; KeyError is a LookupError
    assert not policy.should_retry(KeyError("k"), 1)
    only_value = RetryPolicy(max_attempts=3, retry_on=(ValueError,))
    assert only_value.should_retry(ValueError(), 1)
    assert only_value.should_retry(ValueError(), 2)
    assert not only_value.should_retry(ValueError(), 3)  # budget spent
    assert not only_value.should_retry(ConnectionError(), 1)  # not in retry_on
    assert not only_value.should_retry(NonRetryableError("x"), 1)
    assert only_value.should_retry(RetryAfter(1), 1)
    assert not RetryPolicy(give_up_on=(ConnectionError,)).should_retry(ConnectionResetError(), 1)


def test_retry_after_replaces_the_backoff() -> None:
    policy = RetryPolicy(initial_delay=100, max_delay=500, jitter=0)
    assert policy.delay_after(RetryAfter(2.5), 1) == 2.5
    assert policy.delay_after(ConnectionError(), 1, rand=0.5) == 100
    with pytest.raises(ValueError, match="RetryAfter delay must be a non-negative"):
        RetryAfter(-1)


# --- property tests of the delay maths ----------------------------------------------------

policies = st.builds(
    RetryPolicy,
    max_attempts=st.integers(1, 100_000),
    initial_delay=st.floats(0, 1_000, allow_nan=False),
    max_delay=st.floats(0, 100_000, allow_nan=False),
    backoff_multiplier=st.floats(1, 10, allow_nan=False),
    jitter=st.floats(0, 1, allow_nan=False),
)
attempts = st.integers(1, 100_000)
rands = st.floats(0, 1, allow_nan=False, exclude_max=True)


@given(policies, attempts)
def test_delays_never_decrease_without_jitter(policy: RetryPolicy, attempt: int) -> None:
    steady = attrs.evolve(policy, jitter=0)
    assert steady.delay_for(attempt) <= steady.delay_for(attempt + 1)


@given(policies, attempts, rands)
def test_delays_are_capped_and_never_negative(policy: RetryPolicy, attempt: int, rand: float) -> None:
    delay = policy.delay_for(attempt, rand)
    assert math.isfinite(delay)
    assert 0 <= delay <= policy.max_delay


@given(policies, attempts, rands)
def test_jitter_stays_within_its_share(policy: RetryPolicy, attempt: int, rand: float) -> None:
    centre = policy.delay_for(attempt, 0.5)  # rand 0.5 means no jitter
    delay = policy.delay_for(attempt, rand)
    slack = 1e-9 * max(1.0, centre)
    assert centre * (1 - policy.jitter) - slack <= delay <= centre * (1 + policy.jitter) + slack


@given(policies, attempts, st.floats(0, 10_000, allow_nan=False))
def test_retry_after_delay_is_used_as_is(policy: RetryPolicy, attempt: int, delay: float) -> None:
    assert policy.delay_after(RetryAfter(delay), attempt) == delay


# --- with_retry ---------------------------------------------------------------------------


async def test_with_retry_retries_until_success_through_the_clock() -> None:
    clock = FakeClock()
    calls: list[int] = []
    seen: list[tuple[str, int, float]] = []

    async def flaky() -> str:
        calls.append(len(calls) + 1)
        if len(calls) < 3:
            raise ConnectionError(f"try {len(calls)}")
        return "ok"

    async def on_retry(exc: BaseException, attempt: int, delay: float) -> None:
        seen.append((str(exc), attempt, delay))

    policy = RetryPolicy(max_attempts=5, initial_delay=1.5, jitter=0)
    assert await with_retry(flaky, policy, on_retry=on_retry, clock=clock) == "ok"
    assert calls == [1, 2, 3]
    assert seen == [("try 1", 1, 1.5), ("try 2", 2, 3.0)]
    assert clock.slept == [1.5, 3.0]


async def test_with_retry_raises_the_last_error_when_the_policy_gives_up() -> None:
    clock = FakeClock()
    attempts: list[int] = []

    def always_down() -> None:
        attempts.append(1)
        raise ConnectionError(f"down #{len(attempts)}")

    with pytest.raises(ConnectionError, match="down #3"):
        await with_retry(always_down, RetryPolicy(max_attempts=3, jitter=0), clock=clock)
    assert len(attempts) == 3
    assert clock.slept == [1.0, 2.0]


async def test_with_retry_does_not_retry_non_retryable_errors() -> None:
    clock = FakeClock()
    seen: list[int] = []

    def invalid() -> None:
        raise ValueError("bad request")

    with pytest.raises(ValueError, match="bad request"):
        await with_retry(
            invalid, RetryPolicy.AGGRESSIVE, on_retry=lambda e, a, d: seen.append(a), clock=clock
        )
    assert seen == []
    assert clock.slept == []


async def test_with_retry_uses_retry_after_and_sync_functions() -> None:
    clock = FakeClock()
    results: list[RetryAfter | str] = [RetryAfter(12), "done"]

    def step() -> str:
        value = results.pop(0)
        if isinstance(value, BaseException):
            raise value
        return value

    assert await with_retry(step, RetryPolicy.FAST, clock=clock) == "done"
    assert clock.slept == [12.0]


# --- the engine: how many attempts, and which delays ---------------------------------------


class Failing:
    """A handler failing with ``exc`` on its first ``failures`` calls, then returning ``"ok"``."""

    def __init__(self, failures: int = 10**9, exc: type[Exception] = ConnectionError) -> None:
        self.failures = failures
        self.exc = exc
        self.attempts: list[int] = []
        self.keys: set[str] = set()

    def __call__(self, ctx: StepContext[Any]) -> str:
        self.attempts.append(ctx.attempt)
        self.keys.add(ctx.idempotency_key)
        if len(self.attempts) <= self.failures:
            raise self.exc(f"attempt {ctx.attempt} failed")
        return "ok"


STEADY = RetryPolicy(max_attempts=10, initial_delay=1, backoff_multiplier=2, max_delay=1000, jitter=0)


async def run_one(engine: FluxEngine, handler: Failing, **options: Any) -> tuple[Any, list[int]]:
    result = await engine.execute(create_workflow("retries").step("s", handler, **options), {})
    return result, handler.attempts


async def test_default_is_three_retries_with_the_default_backoff() -> None:
    clock = FakeClock()
    async with FluxEngine(clock=clock) as engine:
        result, attempts = await run_one(engine, Failing())
    assert result.status == "failed"
    assert attempts == [1, 2, 3, 4]
    assert result.history[0].attempts == 4
    default = RetryPolicy()
    assert len(clock.slept) == 3
    for n, delay in enumerate(clock.slept, start=1):  # 1, 2, 4 seconds, +/- 10% jitter
        centre = default.delay_for(n, 0.5)
        assert centre * 0.9 <= delay <= centre * 1.1


async def test_default_retries_sets_the_engine_default() -> None:
    clock = FakeClock()
    async with FluxEngine(clock=clock, default_retries=1) as engine:
        result, attempts = await run_one(engine, Failing())
    assert attempts == [1, 2]
    assert result.error is not None and result.error.attempt == 2


async def test_step_retries_override_the_default_count() -> None:
    clock = FakeClock()
    async with FluxEngine(clock=clock, default_retries=5) as engine:
        _, attempts = await run_one(engine, Failing(), retries=0)
        assert attempts == [1]
        assert clock.slept == []
        _, attempts = await run_one(engine, Failing(), retries=2)
        assert attempts == [1, 2, 3]


async def test_step_retries_override_the_step_policy_count_but_keep_its_delays() -> None:
    clock = FakeClock()
    async with FluxEngine(clock=clock) as engine:
        _, attempts = await run_one(engine, Failing(), retry=STEADY, retries=2)
    assert attempts == [1, 2, 3]
    assert clock.slept == [1.0, 2.0]


async def test_step_policy_alone_sets_count_and_delays() -> None:
    clock = FakeClock()
    async with FluxEngine(clock=clock, default_retries=0) as engine:
        _, attempts = await run_one(engine, Failing(), retry=attrs.evolve(STEADY, max_attempts=4))
    assert attempts == [1, 2, 3, 4]
    assert clock.slept == [1.0, 2.0, 4.0]


async def test_engine_policy_applies_to_steps_without_their_own() -> None:
    """The engine's retry_policy brings its own attempt count and delays."""
    clock = FakeClock()
    async with FluxEngine(clock=clock, retry_policy=attrs.evolve(STEADY, max_attempts=3)) as engine:
        _, attempts = await run_one(engine, Failing())
    assert attempts == [1, 2, 3]
    assert clock.slept == [1.0, 2.0]


async def test_step_retries_override_the_engine_policy_count_but_keep_its_delays() -> None:
    clock = FakeClock()
    async with FluxEngine(clock=clock, retry_policy=STEADY) as engine:
        _, attempts = await run_one(engine, Failing(), retries=1)
    assert attempts == [1, 2]
    assert clock.slept == [1.0]


async def test_step_policy_wins_over_the_engine_policy() -> None:
    clock = FakeClock()
    own = RetryPolicy(max_attempts=2, initial_delay=0.5, jitter=0)
    async with FluxEngine(clock=clock, retry_policy=STEADY) as engine:
        _, attempts = await run_one(engine, Failing(), retry=own)
    assert attempts == [1, 2]
    assert clock.slept == [0.5]


async def test_retry_events_and_history_of_a_step_that_recovers() -> None:
    clock = FakeClock()
    recorder = EventRecorder()
    handler = Failing(failures=2)
    async with FluxEngine(clock=clock, retry_policy=STEADY, on={"*": recorder}) as engine:
        result, attempts = await run_one(engine, handler)
    assert result.status == "completed"
    assert result.outputs == {"s": "ok"}
    assert attempts == [1, 2, 3]
    assert handler.keys == {f"{result.id}:s"}  # one idempotency key for every attempt
    assert recorder.names == [
        "workflow_start",
        "step_start",
        "step_retry",
        "step_start",
        "step_retry",
        "step_start",
        "step_complete",
        "workflow_complete",
    ]
    assert [e.attempt for e in recorder.of("step_start")] == [1, 2, 3]
    retries = recorder.of("step_retry")
    assert [e.attempt for e in retries] == [1, 2]
    assert [e.delay for e in retries] == clock.slept == [1.0, 2.0]
    assert [e.error.message for e in retries] == ["attempt 1 failed", "attempt 2 failed"]
    assert recorder.of("step_error") == []
    (record,) = result.history
    assert (record.status, record.attempts, record.error) == ("completed", 3, None)


async def test_step_error_fires_once_when_retries_run_out() -> None:
    clock = FakeClock()
    recorder = EventRecorder()
    async with FluxEngine(clock=clock, retry_policy=STEADY, on={"*": recorder}) as engine:
        result, _ = await run_one(engine, Failing(), retries=2)
    assert recorder.names.count("step_retry") == 2
    (error_event,) = recorder.of("step_error")
    assert (error_event.step, error_event.attempt) == ("s", 3)
    assert error_event.error.type == "ConnectionError"
    assert recorder.names[-2:] == ["step_error", "workflow_error"]
    assert result.error is not None
    assert (result.error.step, result.error.type, result.error.message) == (
        "s",
        "ConnectionError",
        "attempt 3 failed",
    )


@pytest.mark.parametrize("exc", [ValueError, TypeError, KeyError, NonRetryableError])
async def test_non_retryable_errors_fail_the_step_at_once(exc: type[Exception]) -> None:
    clock = FakeClock()
    recorder = EventRecorder()
    async with FluxEngine(clock=clock, on={"*": recorder}) as engine:
        result, attempts = await run_one(engine, Failing(exc=exc), retries=5)
    assert result.status == "failed"
    assert attempts == [1]
    assert clock.slept == []
    assert recorder.of("step_retry") == []
    assert result.error is not None and result.error.type == exc.__name__


def _typo(ctx: StepContext[Any]) -> Any:
    return totl  # type: ignore[name-defined]  # noqa: F821


def _unbound(ctx: StepContext[Any]) -> int:
    if ctx.attempt > 99:
        count = 1
    return count


def _missing_module(ctx: StepContext[Any]) -> None:
    import flux_no_such_module  # type: ignore[import-not-found]  # noqa: F401


@pytest.mark.parametrize(
    ("handler", "error"),
    [(_typo, "NameError"), (_unbound, "UnboundLocalError"), (_missing_module, "ModuleNotFoundError")],
)
async def test_a_bug_in_a_handler_fails_at_once_under_the_default_policy(
    handler: Callable[[StepContext[Any]], Any], error: str
) -> None:
    clock = FakeClock()
    async with FluxEngine(clock=clock) as engine:
        result = await engine.execute(create_workflow("buggy").step("s", handler))
    assert result.status == "failed"
    assert result.history[0].attempts == 1
    assert clock.slept == []
    assert result.error is not None and result.error.type == error


async def test_retry_on_makes_a_value_error_retryable() -> None:
    clock = FakeClock()
    policy = RetryPolicy(max_attempts=3, initial_delay=1, jitter=0, retry_on=(ValueError,))
    async with FluxEngine(clock=clock) as engine:
        result, attempts = await run_one(engine, Failing(failures=1, exc=ValueError), retry=policy)
    assert result.status == "completed"
    assert attempts == [1, 2]


async def test_retry_after_from_a_handler_sets_the_delay() -> None:
    clock = FakeClock()
    calls: list[int] = []

    def rate_limited(ctx: StepContext[Any]) -> str:
        calls.append(ctx.attempt)
        if ctx.attempt == 1:
            raise RetryAfter(4.5, "rate limited")
        return "through"

    async with FluxEngine(clock=clock, retry_policy=STEADY) as engine:
        result = await engine.execute(create_workflow("ra").step("s", rate_limited), {})
    assert result.outputs == {"s": "through"}
    assert clock.slept == [4.5]
    assert calls == [1, 2]


async def test_retry_delays_wait_on_the_engine_clock() -> None:
    """With a manual clock the run sits in its retry delay until the test moves time."""
    clock = FakeClock(auto_advance=False)
    handler = Failing(failures=1)
    retried = asyncio.Event()
    async with FluxEngine(
        clock=clock, retry_policy=STEADY, on={"step_retry": lambda e: retried.set()}
    ) as engine:
        task = asyncio.create_task(run_one(engine, handler))
        await retried.wait()
        await clock.wait_for_timers()  # the retry delay is now waiting on the clock
        assert clock.slept == [1.0]
        (stored,) = await engine.list()
        assert stored.status == "running"
        assert stored.history[0].error is not None  # the failed attempt is already recorded
        await clock.advance(0.5)
        assert not task.done()
        assert handler.attempts == [1]
        await clock.advance(0.5)
        result, attempts = await task
    assert result.status == "completed"
    assert attempts == [1, 2]


@pytest.mark.parametrize("field", ["initial_delay", "max_delay", "backoff_multiplier", "jitter"])
def test_nan_is_refused_in_every_number_of_a_policy(field: str) -> None:
    """Bad input: NaN, which slips through ordinary range checks."""
    with pytest.raises(ValueError, match="invalid RetryPolicy"):
        RetryPolicy(**{field: float("nan")})  # type: ignore[arg-type]
