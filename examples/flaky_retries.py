"""Retries: a flaky step succeeds on its third attempt; a long delay is stored as a due time;
a bad request is not retried at all.

``retries=N`` allows N retries after the first attempt. The delays come from a RetryPolicy
(1 s, then 2 s here) and go through the engine's clock. A delay longer than the engine's
``durable_after`` (5 s by default) is also stored as a due time: the run suspends, holding
nothing, and ``execute`` continues it when the time comes. Had this process died meanwhile, a
worker or ``engine.recover()`` in any process would continue it instead.

This script hands the engine a ``FakeClock`` so that no wait takes real time; in production
leave ``clock=`` out.

Run it from the root of a checkout (the first command sets up .venv if needed):

    python3 dev.py run examples/flaky_retries.py
    .venv/bin/python examples/flaky_retries.py
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from typing import Any

from flux import FluxEngine, RetryAfter, RetryPolicy, StepContext, create_workflow
from flux.events import StepFailed, StepRetry, WorkflowSuspend
from flux.testing import FakeClock

BACKOFF = RetryPolicy(initial_delay=1.0, backoff_multiplier=2.0, max_delay=30.0, jitter=0)


def flaky_inventory(ctx: StepContext[Any]) -> dict[str, int]:
    if ctx.attempt < 3:
        raise ConnectionError(f"inventory service unreachable (attempt {ctx.attempt})")
    return {"widgets": 42}


def rate_limited(ctx: StepContext[Any]) -> str:
    if ctx.attempt == 1:
        raise RetryAfter(60, "429 Too Many Requests: come back in a minute")
    return "price list fetched"


def bad_request(ctx: StepContext[Any]) -> None:
    raise ValueError("quantity must be positive")  # a bug or bad input: retrying cannot help


def on_retry(event: StepRetry) -> None:
    print(f"  {event.step}: attempt {event.attempt} failed ({event.error.type}); next in {event.delay:g}s")


def on_suspend(event: WorkflowSuspend) -> None:
    print(f"  run suspended at {event.step}: {event.reason}")


def on_error(event: StepFailed) -> None:
    print(f"  {event.step}: failed for good after {event.attempt} attempt(s): {event.error.message}")


def check(ok: bool, what: str) -> None:
    if not ok:
        sys.exit(f"unexpected outcome: {what}")


async def main() -> None:
    clock = FakeClock()
    fake_start, real_start = clock.now(), time.monotonic()
    hooks: dict[str, Callable[[Any], Any]] = {
        "step_retry": on_retry,
        "workflow_suspend": on_suspend,
        "step_error": on_error,
    }
    async with FluxEngine(clock=clock, on=hooks) as engine:
        print("a flaky service, then a rate limit")
        sync_flow = (
            create_workflow("sync-inventory")
            .step("inventory", flaky_inventory, retries=4, retry=BACKOFF)
            .step("prices", rate_limited, retries=2, retry=BACKOFF)
        )
        result = await engine.execute(sync_flow)  # returns once the run has ended
        attempts = {record.step: record.attempts for record in result.history}
        print(f"  execute continued it when due: {result.status}, {result.outputs}, attempts {attempts}")
        check(clock.slept == [1.0, 2.0, 60.0], f"slept {clock.slept}")
        check(result.status == "completed", f"sync-inventory ended {result.status}")
        check(attempts == {"inventory": 3, "prices": 2}, f"attempts {attempts}")

        print("a bad request")
        order_flow = create_workflow("place-order").step("order", bad_request, retries=4, retry=BACKOFF)
        result = await engine.execute(order_flow)
        print(f"  run {result.status}: {result.error.type if result.error else None}")
        check(result.status == "failed" and result.history[0].attempts == 1, "ValueError is not retried")

    fake = (clock.now() - fake_start).total_seconds()
    print(f"fake time passed: {fake:g}s; real time: {time.monotonic() - real_start:.2f}s")


if __name__ == "__main__":
    asyncio.run(main())
