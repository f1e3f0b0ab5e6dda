"""Record builders for storage tests: fixed times, sensible defaults, every field when asked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from flux.records import ErrorInfo, LogLine, RunRecord, StepRecord
from flux.status import RunStatus, StepStatus

T0 = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)

UNICODE = 'naïve café ✓ 日本語 🚀 \u0000 "quoted" \\ back'
NESTED = {"a": [1, 2.5, None, True, {"b": {"c": ["deep", {"d": []}]}}], UNICODE: {"": 0}}


def at(seconds: float) -> datetime:
    """``T0`` plus ``seconds``: a fixed, timezone-aware time with microseconds."""
    return T0 + timedelta(seconds=seconds)


def run_record(
    run_id: str = "run-1",
    *,
    workflow: str = "flow",
    status: RunStatus = RunStatus.RUNNING,
    created: float = 0.0,
    steps: tuple[StepRecord, ...] = (),
    **fields: Any,
) -> RunRecord:
    """A run record with sensible defaults; ``created`` is seconds after ``T0``."""
    fields.setdefault("updated_at", at(created))
    return RunRecord(
        id=run_id, workflow=workflow, fingerprint="fp-1", status=status, created_at=at(created),
        steps=steps, **fields,
    )  # fmt: skip


def step_record(seq: int, status: StepStatus = StepStatus.COMPLETED, **fields: Any) -> StepRecord:
    """A step record of step ``s{seq}``."""
    fields.setdefault("step", f"s{seq}")
    fields.setdefault("attempts", 1)
    return StepRecord(seq=seq, status=status, **fields)


def full_run() -> RunRecord:
    """A run with every field set, in both the run and its step records."""
    logs = (
        LogLine(level="info", time=at(1.5), message=UNICODE),
        LogLine(level="error", time=at(2), message=""),
    )
    failure = ErrorInfo(
        type="ValueError", message=UNICODE, step="charge", attempt=3, traceback="Traceback...\n  x",
        compensation=ErrorInfo(type="KeyError", message="refund", step="charge"),
    )  # fmt: skip
    steps = (
        step_record(
            0, started_at=at(1), finished_at=at(2), output=NESTED, data_set={"k": NESTED, UNICODE: 1},
            data_unset=("gone", UNICODE), condition=True, actions={"pay": {"id": "tx-1"}},
            logs=logs,
        ),
        step_record(1, StepStatus.SKIPPED, condition=False),
        step_record(2, StepStatus.FAILED, attempts=4, started_at=at(3), finished_at=at(4), error=failure),
        step_record(3, StepStatus.SUSPENDED, wake_at=at(50), waiting_for="approved", output="x"),
    )  # fmt: skip
    return run_record(
        "run-ünï 1", workflow="flow-✓", status=RunStatus.ROLLING_BACK, input={"order": NESTED},
        updated_at=at(5), finished_at=at(6), error=failure, owner="host/1/2/abc",
        lease_expires_at=at(30), wake_at=at(40), deadline_at=at(3600),
        cancel_requested={"reason": UNICODE, "compensate": True}, labels={"tenant": UNICODE, "a.b/c": ""},
        steps=steps,
    )  # fmt: skip
