"""One attempt of a handler: run it under its timeout.

Async handlers run on the loop; sync handlers in a worker thread (a sync attempt cannot be
interrupted: at its deadline it is failed and its thread abandoned).

The deadline runs from the attempt's start (``started``, read before the handler is called).
An async handler runs up to its first suspension before any timer is set (the visit loop
does that first step itself, ``coroutine.send(None)``): one that finishes without ever
suspending needs no timer, which keeps a trivial step cheap. One that suspends is checked
then (:func:`resume_handler`): past its deadline already (blocking work before its first ``await``), it is
stopped there and fails with :class:`StepTimeoutError` at once; otherwise the timer is armed
for what is left. A coroutine that never suspends cannot be stopped at all: it is stopped at
its first suspension after the deadline, and one that returns without suspending keeps its
result.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
from collections.abc import Callable, Coroutine, Generator
from concurrent.futures import Executor
from datetime import datetime
from typing import Any

from flux.clock import Clock
from flux.context import StepContext
from flux.errors import StepTimeoutError


async def call_sync(
    clock: Clock,
    executor: Callable[[], Executor],
    fn: Callable[..., Any],
    context: StepContext[Any],
    timeout: float,
) -> Any:
    """Run a sync handler on a step thread; :class:`StepTimeoutError` after ``timeout`` seconds."""
    return await within(clock, timeout, _in_thread(executor, fn, context), context, timeout, False)


async def resume_handler(
    clock: Clock,
    running: Coroutine[Any, Any, Any],
    pending: Any,
    context: StepContext[Any],
    timeout: float,
    started: datetime,
) -> Any:
    """Go on with an async handler that suspended (on ``pending``) in its first step, under
    what is left of its deadline (``timeout`` seconds from ``started``)."""
    remaining = timeout - (clock.now() - started).total_seconds()
    if remaining <= 0:  # it blocked past its deadline before its first await
        _stop(running)
        raise _timed_out(context, timeout, True)
    return await within(clock, remaining, _Resume(running, pending), context, timeout, True)


async def within(
    clock: Clock,
    seconds: float,
    running: Any,
    context: StepContext[Any],
    timeout: float,
    is_async: bool = True,
) -> Any:
    """Await ``running`` for at most ``seconds`` (the rest of the attempt's ``timeout``)."""
    deadline = clock.timeout(seconds)
    try:
        async with deadline:
            return await running
    except TimeoutError:
        if not deadline.expired():
            raise
        raise _timed_out(context, timeout, is_async) from None


async def _in_thread(
    executor: Callable[[], Executor], fn: Callable[..., Any], context: StepContext[Any]
) -> Any:
    """Run sync ``fn(context)`` on a step thread (in a copy of the caller's contextvars)."""
    loop = asyncio.get_running_loop()
    call = functools.partial(contextvars.copy_context().run, fn, context)
    result = await loop.run_in_executor(executor(), call)
    return await result if inspect.isawaitable(result) else result


def _timed_out(context: StepContext[Any], timeout: float, is_async: bool) -> StepTimeoutError:
    kind = "async" if is_async else "sync (its thread was abandoned)"
    return StepTimeoutError(
        f"step {context.step!r} attempt {context.attempt} timed out after {timeout:g}s "
        f"({kind}); raise its timeout= if it needs longer",
        step=context.step,
        attempt=context.attempt,
    )


def _stop(coro: Coroutine[Any, Any, Any]) -> None:
    """Cancel a suspended coroutine at its current ``await``, as a deadline would."""
    try:
        coro.throw(asyncio.CancelledError())
    except (Exception, asyncio.CancelledError):  # stopped: cancelled, finished or failed
        return
    coro.close()  # it caught the cancellation and awaited again


class _Resume:
    """Awaits a coroutine that already ran up to its first suspension (``pending``).

    It forwards what the task sends or throws in, exactly as ``await`` would have.
    """

    __slots__ = ("_coro", "_pending")

    def __init__(self, coro: Coroutine[Any, Any, Any], pending: Any) -> None:
        self._coro = coro
        self._pending = pending

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, pending = self._coro, self._pending
        while True:
            try:
                value = yield pending
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:
                try:
                    pending = coro.throw(exc)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    pending = coro.send(value)
                except StopIteration as done:
                    return done.value


async def maybe_await(value: Any) -> Any:
    """``value``, awaited first if it is awaitable (sync or async predicates and callbacks)."""
    if inspect.isawaitable(value):
        return await value
    return value
