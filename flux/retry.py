"""Retry policies: how many attempts, how long between them, and which errors retry.

Everything here but :func:`with_retry` is pure and needs no event loop.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import random
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, TypeVar, overload

import attrs

from flux._duration import to_count, to_seconds
from flux.clock import Clock, SystemClock
from flux.errors import NonRetryableError, RetryAfter, SerializationError

T = TypeVar("T")

_NON_RETRYABLE: tuple[type[BaseException], ...] = (
    ValueError,
    TypeError,
    KeyError,
    AttributeError,
    LookupError,
    SerializationError,
    # Bugs in the handler's own code: another attempt runs the same code and fails the same way.
    NameError,  # UnboundLocalError too
    ImportError,  # ModuleNotFoundError too
    SyntaxError,
    AssertionError,
    NotImplementedError,
)


def _status_code(exc: BaseException) -> int | None:
    """An HTTP status carried by ``exc`` (``status_code``, ``status``, ``response.status_code``)."""
    for holder in (exc, getattr(exc, "response", None)):
        for attr in ("status_code", "status"):
            code = getattr(holder, attr, None)
            if isinstance(code, int) and 100 <= code <= 599:
                return code
    return None


def is_retryable_error(exc: BaseException) -> bool:
    """Whether ``exc`` is worth another attempt.

    Retry: timeouts, connection errors, 5xx-style errors (and 408/429), and anything unknown.
    Do not retry: :class:`NonRetryableError`, validation, type and value errors, other
    4xx-style errors, and the errors of a bug in the handler's code (``NameError``,
    ``UnboundLocalError``, ``ImportError``, ``SyntaxError``, ``AssertionError``,
    ``NotImplementedError``), which another attempt would only repeat.

    >>> is_retryable_error(TimeoutError()), is_retryable_error(ValueError("bad"))
    (True, False)
    """
    if isinstance(exc, RetryAfter):
        return True
    if isinstance(exc, NonRetryableError):
        return False
    code = _status_code(exc)
    if code is not None:
        return code >= 500 or code in (408, 429)
    if isinstance(exc, TimeoutError | ConnectionError | asyncio.TimeoutError):
        return True
    return not isinstance(exc, _NON_RETRYABLE)


def _exception_types(value: Any) -> tuple[type[BaseException], ...]:
    items = value if isinstance(value, tuple | list) else (value,)
    for item in items:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise TypeError(f"expected exception classes, got {item!r}")
    return tuple(items)


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """How a step retries.

    Attributes:
        max_attempts: attempts in all, the first included (1 means no retry).
        initial_delay: seconds before the second attempt.
        max_delay: the cap of any delay.
        backoff_multiplier: each further delay is the previous one times this.
        jitter: a fraction; each delay is spread uniformly by +/- this share of itself.
        retry_on: if set, only these exception types retry (``NonRetryableError`` never does).
        give_up_on: exception types that never retry.

    With neither ``retry_on`` nor ``give_up_on`` matching, :func:`is_retryable_error` decides.

    >>> RetryPolicy(max_attempts=4, initial_delay=1, jitter=0).delay_for(3)
    4.0
    """

    max_attempts: int = 4
    initial_delay: float = 1.0
    max_delay: float = 60.0
    backoff_multiplier: float = 2.0
    jitter: float = 0.1
    retry_on: tuple[type[BaseException], ...] | None = attrs.field(
        default=None, converter=attrs.converters.optional(_exception_types)
    )
    give_up_on: tuple[type[BaseException], ...] = attrs.field(default=(), converter=_exception_types)

    NONE: ClassVar[RetryPolicy]
    FAST: ClassVar[RetryPolicy]
    STANDARD: ClassVar[RetryPolicy]
    AGGRESSIVE: ClassVar[RetryPolicy]
    PATIENT: ClassVar[RetryPolicy]

    def __attrs_post_init__(self) -> None:
        problems = []
        checks: list[tuple[str, Callable[[], object]]] = [
            ("max_attempts", lambda: to_count(self.max_attempts, "max_attempts", minimum=1)),
            ("initial_delay", lambda: to_seconds(self.initial_delay, "initial_delay", zero=True)),
            ("max_delay", lambda: to_seconds(self.max_delay, "max_delay", zero=True)),
        ]
        for name, check in checks:
            try:
                value = check()
            except ValueError as exc:
                problems.append(str(exc))
            else:
                object.__setattr__(self, name, value)  # a timedelta delay becomes seconds
        # Written as "not (valid)" so that NaN, which fails every comparison, is refused too.
        if not 1 <= self.backoff_multiplier < math.inf:
            problems.append(
                f"backoff_multiplier must be a finite number >= 1; got {self.backoff_multiplier!r}"
            )
        if not 0 <= self.jitter <= 1:
            problems.append(f"jitter must be a fraction between 0 and 1; got {self.jitter!r}")
        if problems:
            raise ValueError("invalid RetryPolicy: " + "; ".join(problems))

    def with_retries(self, retries: int) -> RetryPolicy:
        """This policy with ``retries`` retries after the first attempt.

        Raises:
            ValueError: ``retries`` is not an int >= 0.
        """
        return attrs.evolve(self, max_attempts=to_count(retries, "retries", minimum=0) + 1)

    def should_retry(self, exc: BaseException, attempt: int) -> bool:
        """Whether attempt number ``attempt`` (1-based), which raised ``exc``, gets a successor."""
        if attempt >= self.max_attempts or isinstance(exc, NonRetryableError):
            return False
        if self.give_up_on and isinstance(exc, self.give_up_on):
            return False
        if self.retry_on is not None:
            return isinstance(exc, (*self.retry_on, RetryAfter))
        return is_retryable_error(exc)

    def delay_for(self, attempt: int, rand: float = 0.5) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based).

        ``rand`` in [0, 1) picks the jitter; 0.5 means none.
        """
        try:
            base = self.initial_delay * self.backoff_multiplier ** (attempt - 1)
        except OverflowError:  # a very late attempt: far beyond any max_delay
            base = math.inf if self.initial_delay else 0.0
        spread = 1.0 + self.jitter * (2.0 * rand - 1.0)
        return max(0.0, min(self.max_delay, base * spread))

    def delay_after(self, exc: BaseException, attempt: int, rand: float | None = None) -> float:
        """The delay after ``exc``: its :class:`RetryAfter` delay if any, else the backoff."""
        if isinstance(exc, RetryAfter):
            return exc.delay
        return self.delay_for(attempt, random.random() if rand is None else rand)


RetryPolicy.NONE = RetryPolicy(max_attempts=1, initial_delay=1.0)
RetryPolicy.FAST = RetryPolicy(max_attempts=3, initial_delay=1.0, max_delay=10.0)
RetryPolicy.STANDARD = RetryPolicy(max_attempts=3, initial_delay=2.0, max_delay=30.0)
RetryPolicy.AGGRESSIVE = RetryPolicy(max_attempts=5, initial_delay=2.0, max_delay=60.0)
RetryPolicy.PATIENT = RetryPolicy(max_attempts=10, initial_delay=5.0, max_delay=300.0)


@overload
async def with_retry(
    fn: Callable[[], Awaitable[T]],
    policy: RetryPolicy = ...,
    *,
    on_retry: Callable[[BaseException, int, float], Any] | None = None,
    clock: Clock | None = None,
) -> T: ...
@overload
async def with_retry(
    fn: Callable[[], T],
    policy: RetryPolicy = ...,
    *,
    on_retry: Callable[[BaseException, int, float], Any] | None = None,
    clock: Clock | None = None,
) -> T: ...
async def with_retry(
    fn: Callable[[], Any],
    policy: RetryPolicy = RetryPolicy.STANDARD,
    *,
    on_retry: Callable[[BaseException, int, float], Any] | None = None,
    clock: Clock | None = None,
) -> Any:
    """Call the zero-argument ``fn`` (sync or async) until it succeeds or ``policy`` gives up.

    ``on_retry(exc, attempt, delay)`` (sync or async) is called before each wait. The last
    error is raised when the policy gives up.

    >>> import asyncio
    >>> asyncio.run(with_retry(lambda: 42, RetryPolicy.FAST))
    42
    """
    clock = clock or SystemClock()
    attempt = 0
    while True:
        attempt += 1
        try:
            result = fn()
            if inspect.isawaitable(result):
                return await result
            return result
        except Exception as exc:
            if not policy.should_retry(exc, attempt):
                raise
            delay = policy.delay_after(exc, attempt)
            if on_retry is not None:
                maybe = on_retry(exc, attempt, delay)
                if inspect.isawaitable(maybe):
                    await maybe
            await clock.sleep(delay)
