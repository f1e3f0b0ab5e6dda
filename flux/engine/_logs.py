"""What the engine logs, fed by its own lifecycle events (and a checkpoint hook).

Everything goes to ``logging.getLogger("flux.engine")``: run start, resume and end, retries and
suspensions at INFO; lease loss and takeovers at WARNING; checkpoints at DEBUG. Every record
carries ``run_id``, ``workflow``, ``step`` and ``attempt`` in ``extra`` (None where they do not
apply). The library never prints: configure ``logging`` to see these lines (``flux -v``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from flux.events import (
    EventBus,
    StepRetry,
    WorkflowCancel,
    WorkflowComplete,
    WorkflowFailed,
    WorkflowResume,
    WorkflowStart,
    WorkflowSuspend,
)
from flux.records import RunRecord, StepRecord

logger = logging.getLogger("flux.engine")


def fields(run_id: str, workflow: str, step: str | None = None, attempt: int | None = None) -> dict[str, Any]:
    """The ``extra`` of a record about a run."""
    return {"run_id": run_id, "workflow": workflow, "step": step, "attempt": attempt}


def _start(ev: WorkflowStart) -> None:
    logger.info("run %s of %s started", ev.run_id, ev.workflow, extra=fields(ev.run_id, ev.workflow))


def _resume(ev: WorkflowResume) -> None:
    where = f" at step {ev.from_step}" if ev.from_step else ""
    logger.info("run %s of %s resumed%s", ev.run_id, ev.workflow, where, extra=fields(ev.run_id, ev.workflow))


def _complete(ev: WorkflowComplete) -> None:
    logger.info(
        "run %s of %s completed in %.3fs", ev.run_id, ev.workflow, ev.duration,
        extra=fields(ev.run_id, ev.workflow),
    )  # fmt: skip


def _error(ev: WorkflowFailed) -> None:
    error = ev.error
    step, attempt = (error.step, error.attempt) if error is not None else (None, None)
    why = f": {error.type}: {error.message}" if error is not None else ""
    logger.info(
        "run %s of %s ended %s%s", ev.run_id, ev.workflow, ev.status, why,
        extra=fields(ev.run_id, ev.workflow, step, attempt),
    )  # fmt: skip


def _cancel(ev: WorkflowCancel) -> None:
    logger.info(
        "run %s of %s cancelled: %s", ev.run_id, ev.workflow, ev.reason or "cancelled",
        extra=fields(ev.run_id, ev.workflow),
    )  # fmt: skip


def _suspend(ev: WorkflowSuspend) -> None:
    logger.info(
        "run %s of %s suspended at step %s (%s)", ev.run_id, ev.workflow, ev.step, ev.reason,
        extra=fields(ev.run_id, ev.workflow, ev.step),
    )  # fmt: skip


def _retry(ev: StepRetry) -> None:
    logger.info(
        "run %s: step %s attempt %d failed (%s: %s); retrying in %gs", ev.run_id, ev.step, ev.attempt,
        ev.error.type, ev.error.message, ev.delay, extra=fields(ev.run_id, ev.workflow, ev.step, ev.attempt),
    )  # fmt: skip


_SUBSCRIBERS: dict[str, Callable[[Any], None]] = {
    WorkflowStart.name: _start,
    WorkflowResume.name: _resume,
    WorkflowComplete.name: _complete,
    WorkflowFailed.name: _error,
    WorkflowCancel.name: _cancel,
    WorkflowSuspend.name: _suspend,
    StepRetry.name: _retry,
}


def _info_enabled() -> bool:
    return logger.isEnabledFor(logging.INFO)


def attach(bus: EventBus) -> None:
    """Log a bus's run-level events; while INFO is off for ``flux.engine`` they cost nothing."""
    bus.log_with(_SUBSCRIBERS, _info_enabled)


def checkpoint(run: RunRecord, steps: Sequence[StepRecord]) -> None:
    """Log one checkpoint at DEBUG (the caller checks ``logger.isEnabledFor(DEBUG)`` first)."""
    last = steps[-1] if steps else None
    step, attempt = (last.step, last.attempts) if last is not None else (None, None)
    what = ", ".join(f"{record.step}={record.status.value}" for record in steps) or "run fields only"
    logger.debug(
        "run %s checkpoint: %s (run %s)", run.id, what, run.status.value,
        extra=fields(run.id, run.workflow, step, attempt),
    )  # fmt: skip


def lease_lost(run_id: str, workflow: str, error: BaseException) -> None:
    """Log that another process took a run over from this one."""
    logger.warning(
        "run %s of %s: lease lost, another process drives it now (%s)", run_id, workflow, error,
        extra=fields(run_id, workflow),
    )  # fmt: skip


def takeover(run: RunRecord, why: str) -> None:
    """Log that this process took over a run another process held."""
    logger.warning(
        "run %s of %s taken over from %s (%s)", run.id, run.workflow, run.owner, why,
        extra=fields(run.id, run.workflow),
    )  # fmt: skip
