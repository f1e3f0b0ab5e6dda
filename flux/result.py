"""RunResult: what ``execute``, ``get`` and ``list`` return; Recovery: what ``recover`` returns."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import attrs

from flux.records import JSON, ErrorInfo, RunRecord, StepRecord
from flux.status import RunStatus


@attrs.frozen(kw_only=True, repr=False, slots=False)  # dict-based: cheaper to make (one per run)
class RunResult:
    """The state of a run, frozen.

    ``repr(result)`` is one line (``<RunResult 1f3a… order completed 3 steps 0.12s>``);
    :meth:`summary` tells the whole story in a few lines.

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

    def __repr__(self) -> str:
        visits = len(self.history)
        steps = f"{visits} step{'' if visits == 1 else 's'}"
        parts = [_short(self.id), self.workflow, str(self.status), steps]
        if self.duration is not None:
            parts.append(f"{self.duration:.2f}s")
        return f"<RunResult {' '.join(parts)}>"

    def summary(self) -> str:
        """A few lines for people: the run and its status, each step visit with its duration, the error.

        >>> print(result.summary())  # doctest: +SKIP
        run 1f3a9c0e2b7d4e0f9a1b2c3d4e5f6a7b (workflow 'order'): failed after 0.12s
          completed  fetch   0.010s
          failed     charge  0.100s  3 attempts
        error in step 'charge' (attempt 3): ConnectionError: payment gateway down
        """
        took = "" if self.duration is None else f" after {self.duration:.2f}s"
        lines = [f"run {self.id} (workflow {self.workflow!r}): {self.status}{took}"]
        width = max((len(record.step) for record in self.history), default=0)
        for record in self.history:
            duration = "" if record.duration is None else f"{record.duration:.3f}s"
            attempts = f"  {record.attempts} attempts" if record.attempts > 1 else ""
            line = f"  {record.status!s:<11}{record.step:<{width}}  {duration:>8}{attempts}"
            lines.append(line.rstrip())
        error = self.error
        if error is not None:
            lines.append(f"error{_where(error)}: {error.type}: {error.message}")
            if error.compensation is not None:
                failed = error.compensation
                lines.append(f"and its compensation failed{_where(failed)}: {failed.type}: {failed.message}")
        return "\n".join(lines)

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


class Recovery(list[RunResult]):
    """What :meth:`FluxEngine.recover` returns: the resumed runs' results, as a list, and
    ``failures``: run id -> the exception that kept that run from being resumed.

    >>> Recovery([], {}).failures
    {}
    """

    def __init__(self, resumed: Iterable[RunResult], failures: Mapping[str, Exception]) -> None:
        super().__init__(resumed)
        self.failures: dict[str, Exception] = dict(failures)


def _short(run_id: str) -> str:
    """A run id cut to its first characters for a one-line display (the full id is in ``.id``)."""
    return run_id if len(run_id) <= 12 else f"{run_id[:4]}…"


def _where(error: ErrorInfo) -> str:
    if error.step is None:
        return ""
    attempt = "" if error.attempt is None else f" (attempt {error.attempt})"
    return f" in step {error.step!r}{attempt}"
