"""Workflows and the ledger shared by the worker scripts (each script imports this file).

Every step appends a line to a ledger file (``FLUX_LEDGER``) with one ``O_APPEND`` write: an
external effect the tests can count, written by whichever process ran the step.
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta
from typing import Any

from flux import RetryAfter, StepContext, create_workflow

LEDGER_ENV = "FLUX_LEDGER"


def note(kind: str, run_id: str, step: str = "-") -> None:
    """Append ``kind run_id step pid`` to the ledger in one atomic append."""
    line = f"{kind} {run_id} {step} {os.getpid()}\n".encode()
    fd = os.open(os.environ[LEDGER_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def ledger_lines(kind: str, run_id: str) -> int:
    """How many ``kind`` lines the ledger holds for ``run_id``."""
    try:
        with open(os.environ[LEDGER_ENV], encoding="utf-8") as fh:
            return sum(1 for line in fh if line.split()[:2] == [kind, run_id])
    except FileNotFoundError:
        return 0


def effect(ctx: StepContext[Any]) -> str:
    note("step", ctx.run_id, ctx.step)
    return ctx.step


def flaky(ctx: StepContext[Any]) -> str:
    """Fails its first attempt when the input says so (the retry delay comes from the input)."""
    delay = ctx.input.get("retry_after")
    if delay is not None and ctx.attempt == 1:
        raise RetryAfter(delay, "the first attempt fails on purpose")
    note("step", ctx.run_id, ctx.step)
    return "ok"


def nap_until(ctx: StepContext[Any]) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=ctx.input["nap"])


ledgered = (
    create_workflow("ledgered")
    .step("first", effect)
    .sleep_until("nap", nap_until)
    .step("flaky", flaky)
    .step("last", effect)
)


def ledgered_input(n: int) -> dict[str, Any]:
    """Half the runs sleep durably (longer than durable_after=0.5), a quarter retry once,
    half of those after a durable delay."""
    retry_after = None if n % 4 else (0.05 if n % 8 == 0 else 0.8)
    return {"n": n, "nap": 0.2 if n % 2 else 0.8, "retry_after": retry_after}


async def work(ctx: StepContext[Any]) -> str:
    """Runs ``seconds`` the first time, ``then`` seconds on any later execution."""
    first = ledger_lines("start", ctx.run_id) == 0
    note("start", ctx.run_id, ctx.step)
    await asyncio.sleep(ctx.input["seconds"] if first else ctx.input.get("then", 0))
    note("end", ctx.run_id, ctx.step)
    return "worked"


slow = create_workflow("slow").step("work", work, timeout=300)

sleeper = create_workflow("sleeper").sleep("nap", 2).step("done", effect)

WORKFLOWS = {"ledgered": ledgered, "slow": slow, "sleeper": sleeper}
