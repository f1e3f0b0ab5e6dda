"""One attempt of a handler: run it under its timeout.

Async handlers run on the loop; sync handlers in a worker thread (a sync attempt cannot be
interrupted: at its deadline it is failed and its thread abandoned). An async handler that
finishes without ever suspending needs no timer, so the deadline is armed only at its first
suspension: that keeps a trivial step cheap.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
from collections.abc import Callable, Coroutine, Generator
from concurrent.futures import Executor
from typing import Any

from flux.clock import Clock
from flux.context import StepContext
from flux.errors import StepTimeoutError


async def call_handler(
    clock: Clock,
    executor: Callable[[], Executor],
    fn: Callable[..., Any],
    context: StepContext[Any],
    timeout: float,
    is_async: bool,
) -> Any:
    """Call ``fn(context)``; raise :class:`StepTimeoutError` if it outlives ``timeout`` seconds."""
    started: Any = None
    if is_async:
        started = fn(context)
        if inspect.iscoroutine(started):
            try:
                pending = started.send(None)
            except StopIteration as done:  # finished without suspending
                return done.value
            started = _Resume(started, pending)
    deadline = clock.timeout(timeout)
    try:
        async with deadline:
            if started is not None:
                return await started
            loop = asyncio.get_running_loop()
            call = functools.partial(contextvars.copy_context().run, fn, context)
            result = await loop.run_in_executor(executor(), call)
            return await result if inspect.isawaitable(result) else result
    except TimeoutError:
        if not deadline.expired():
            raise
        kind = "async" if is_async else "sync (its thread was abandoned)"
        raise StepTimeoutError(
            f"step {context.step!r} attempt {context.attempt} timed out after {timeout:g}s "
            f"({kind}); raise its timeout= if it needs longer",
            step=context.step,
            attempt=context.attempt,
        ) from None


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
