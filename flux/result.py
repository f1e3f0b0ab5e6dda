"""RunResult: what ``execute``, ``get`` and ``list`` return."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import attrs

from flux.records import JSON, ErrorInfo, RunRecord, StepRecord
from flux.status import RunStatus


@attrs.frozen(kw_only=True)
class RunResult:
    """The state of a run, frozen.

    Attributes:
        id: the run id.
        workflow: the workflow's name.
        status: a :class:`RunStatus` (a ``str``: ``result.status == "completed"`` holds).
        data: ``ctx.data`` as the run left it.
        outputs: each finished step's output, by step name.
        history: one :class:`StepRecord` per step visit, in start order.
        error: the recorded failure (with ``error.compensation`` when a compensation failed too).
        duration: seconds from creation to finish (None while unfinished).
        input: the run's input, as stored (JSON).
        created: False when an idempotency key returned an existing run.
        labels: the run's labels (str to str), as given when it started.
    """

    id: str
    workflow: str
    status: RunStatus
    data: dict[str, JSON]
    outputs: dict[str, JSON]
    history: tuple[StepRecord, ...]
    error: ErrorInfo | None
    duration: float | None
    input: JSON = None
    created_at: datetime | None = None
    finished_at: datetime | None = None
    created: bool = True
    labels: dict[str, str] = attrs.field(factory=dict)

    @property
    def ok(self) -> bool:
        """True when the run completed."""
        return self.status == RunStatus.COMPLETED

    @classmethod
    def from_record(cls, run: RunRecord, **extra: Any) -> RunResult:
        """Build a result from a stored run."""
        return cls(
            id=run.id,
            workflow=run.workflow,
            status=run.status,
            data=run.data,
            outputs=run.outputs,
            history=run.steps,
            error=run.error,
            duration=run.duration,
            input=run.input,
            created_at=run.created_at,
            finished_at=run.finished_at,
            labels=dict(run.labels),
            **extra,
        )
