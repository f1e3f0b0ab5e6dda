"""Due times of sleeps and waits, shared by the plain-chain driver and the flow visitor."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from flux.context import StepContext
from flux.engine._attempt import maybe_await
from flux.errors import WaitTimeoutError
from flux.plan import StepSpec
from flux.records import ErrorInfo


def after(now: datetime, seconds: float | None) -> datetime | None:
    """``now`` plus ``seconds``, or None without a number."""
    return None if seconds is None else now + timedelta(seconds=seconds)


async def due_time(
    spec: StepSpec, name: str, now: datetime, context: Callable[[], StepContext[Any]]
) -> datetime:
    """When a sleep step is due: ``now + duration``, or what ``until(ctx)`` returns.

    Raises:
        TypeError: ``until`` returned something other than a timezone-aware datetime.
    """
    if spec.until is None:
        return now + timedelta(seconds=spec.duration or 0.0)
    due = await maybe_await(spec.until(context()))
    if not isinstance(due, datetime) or due.tzinfo is None:
        raise TypeError(
            f"sleep_until of step {name!r} must return a timezone-aware datetime "
            f"(e.g. datetime(..., tzinfo=UTC)), got {due!r}"
        )
    return due


def wait_timed_out(name: str, signal: str, wake_at: datetime, attempt: int) -> ErrorInfo:
    """The recorded error of a wait whose timeout passed before its signal came."""
    error = WaitTimeoutError(
        f"step {name!r} waited for signal {signal!r} until {wake_at.isoformat()} "
        "and none came; send it sooner or raise the wait's timeout",
        step=name,
        attempt=attempt,
    )
    return ErrorInfo.from_exception(error, step=name, attempt=attempt)
