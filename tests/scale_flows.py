"""Workflows and the ledger of the scale-out and wake-up tests (the scripts import this file).

Every step effect appends ``KIND RUN_ID STEP PID TIME`` to a ledger file (``FLUX_LEDGER``) in
one ``O_APPEND`` write, so the tests can count effects and see who made them when.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from flux import RetryAfter, StepContext, create_workflow


def note(kind: str, run_id: str, step: str = "-") -> None:
    """Append one ledger line in one atomic append."""
    line = f"{kind} {run_id} {step} {os.getpid()} {time.time():.6f}\n".encode()
    fd = os.open(os.environ["FLUX_LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def effect(ctx: StepContext[Any]) -> str:
    note("exec", ctx.run_id, ctx.step)
    return ctx.step


def flaky(ctx: StepContext[Any]) -> str:
    """The first attempt fails (retried after a delay the input gives: in memory or durable)."""
    if ctx.attempt == 1:
        raise RetryAfter(ctx.input["retry_after"], "the first attempt fails on purpose")
    note("exec", ctx.run_id, ctx.step)
    return "ok"


def item(ctx: StepContext[Any], value: int) -> int:
    note("exec", ctx.run_id, ctx.step)
    return value * 2


def nap_until(ctx: StepContext[Any]) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=ctx.input["nap"])


chain = (
    create_workflow("chain")
    .step("a", effect)
    .sleep_until("nap", nap_until)
    .step("flaky", flaky, retries=3)
    .step("b", effect)
)
signalled = create_workflow("signalled").step("a", effect).wait_for_signal("go").step("b", effect)
fanout = (
    create_workflow("fanout")
    .parallel(
        "group",
        create_workflow("left").step("l", effect),
        create_workflow("right").step("r1", effect).step("r2", effect),
    )
    .map("each", item, over=lambda ctx: [1, 2, 3])
    .step("end", effect)
)
waiter = create_workflow("waiter").wait_for_signal("go").step("after", effect)

WORKFLOWS = {"chain": chain, "signalled": signalled, "fanout": fanout, "waiter": waiter}

EFFECTS = {
    "chain": ("a", "flaky", "b"),
    "signalled": ("a", "b"),
    "fanout": ("l", "r1", "r2", "each[0]", "each[1]", "each[2]", "end"),
    "waiter": ("after",),
}
"""The steps of each workflow that leave an effect in the ledger."""


def scale_input(n: int) -> dict[str, Any]:
    """Naps in memory or durable (durable_after=0.5), retry delays in memory or durable."""
    return {"nap": 0.1 if n % 2 else 0.7, "retry_after": 0.05 if n % 3 else 0.6}
