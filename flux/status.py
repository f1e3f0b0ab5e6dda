"""Run and step statuses: ``str``-valued enums, so ``result.status == "completed"`` holds."""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    """Where a run stands."""

    PENDING = "pending"
    RUNNING = "running"
    SUSPENDED = "suspended"
    COMPLETED = "completed"
    FAILED = "failed"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """True for the statuses a run never leaves on its own."""
        return self in _FINISHED_RUN


class StepStatus(StrEnum):
    """Where one visit of a step stands."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"
    SUSPENDED = "suspended"
    COMPENSATING = "compensating"
    COMPENSATED = "compensated"


_FINISHED_RUN = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.ROLLED_BACK, RunStatus.CANCELLED})
