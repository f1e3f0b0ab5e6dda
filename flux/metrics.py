"""``flux.run_metrics(result)``: where a run spent its time, read from its history.

Durations come from the recorded visits' start and finish times, so metrics work on the
result of ``execute`` as well as on a run loaded later (``engine.get``). Construct visits
(parallel groups, maps, branches) enclose the work of their parts; they are reported per step
but not counted as work of their own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from flux.records import StepRecord

if TYPE_CHECKING:
    from flux.plan import Workflow
    from flux.result import RunResult

__all__ = ["RunMetrics", "StepMetrics", "run_metrics"]

_KIND = "flux:kind"


@attrs.frozen(kw_only=True)
class StepMetrics:
    """One step's visits, summed.

    Attributes:
        name: the step's name.
        duration: seconds spent in its visits (for a construct: from its start to its end).
        attempts: attempts over all visits.
        visits: how often the step was reached.
        items: for a map step: how many item (or batch) visits it recorded.
        item_duration: for a map step: seconds spent in those visits, summed.
    """

    name: str
    duration: float = 0.0
    attempts: int = 0
    visits: int = 0
    items: int = 0
    item_duration: float = 0.0


@attrs.frozen(kw_only=True)
class RunMetrics:
    """Where a run spent its time.

    Attributes:
        duration: seconds from the run's creation to its end (None while unfinished).
        wall: seconds from the first step's start to the last step's finish.
        busy: seconds of work: the durations of every step, map item and branch step visit
            summed (constructs excluded: their parts count).
        parallelism: ``busy / wall``: 1.0 for a straight chain, up to N for N steps at once.
        steps: per step (map items folded into their map step).
        critical_path: the chain of visits that decided when the run ended, first to last:
            along the plan's dependencies when a dependency plan is given, else along time
            (each visit preceded by the one that finished last before it started).
        critical_path_duration: seconds of work along the critical path.
    """

    duration: float | None
    wall: float
    busy: float
    parallelism: float
    steps: Mapping[str, StepMetrics]
    critical_path: tuple[str, ...]
    critical_path_duration: float

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict of every field."""
        return {
            "duration": self.duration,
            "wall": self.wall,
            "busy": self.busy,
            "parallelism": self.parallelism,
            "steps": {name: attrs.asdict(step) for name, step in self.steps.items()},
            "critical_path": list(self.critical_path),
            "critical_path_duration": self.critical_path_duration,
        }


def run_metrics(result: RunResult, workflow: Workflow[Any] | None = None) -> RunMetrics:
    """Timing of a run: total and per-step durations, attempts, critical path, parallelism.

    Pass the ``workflow`` of a dependency plan (``after=``) to get the critical path along its
    dependency edges; otherwise it is read from the visits' times.

    >>> import asyncio
    >>> from flux import FluxEngine, create_workflow
    >>> async def run():
    ...     async with FluxEngine() as engine:
    ...         return await engine.execute(create_workflow("w").step("a", lambda ctx: 1))
    >>> run_metrics(asyncio.run(run())).steps["a"].attempts
    1
    """
    history = [r for r in result.history if r.started_at is not None and r.finished_at is not None]
    leaves = [r for r in history if _KIND not in r.actions]
    steps = _per_step(history)
    busy = sum(_seconds(r) for r in leaves)
    wall = 0.0
    if leaves:
        first = min(r.started_at for r in leaves if r.started_at is not None)
        last = max(r.finished_at for r in leaves if r.finished_at is not None)
        wall = (last - first).total_seconds()
    if workflow is not None and workflow.shape.deps is not None:
        path = _graph_path(workflow, history)
    else:
        path = _time_path(leaves)
    latest = {r.step: r for r in history}
    return RunMetrics(
        duration=result.duration,
        wall=wall,
        busy=busy,
        parallelism=busy / wall if wall > 0 else 1.0,
        steps=steps,
        critical_path=tuple(path),
        critical_path_duration=sum(_seconds(latest[name]) for name in path if name in latest),
    )


def _seconds(record: StepRecord) -> float:
    return record.duration or 0.0


def _per_step(history: Sequence[StepRecord]) -> dict[str, StepMetrics]:
    steps: dict[str, StepMetrics] = {}
    for record in history:
        name, _, rest = record.step.partition("[")
        step = steps.get(name) or StepMetrics(name=name)
        if rest:  # a map item or batch
            step = attrs.evolve(
                step,
                items=step.items + 1,
                item_duration=step.item_duration + _seconds(record),
                attempts=step.attempts + record.attempts,
            )
        else:
            step = attrs.evolve(
                step,
                duration=step.duration + _seconds(record),
                attempts=step.attempts + record.attempts,
                visits=step.visits + 1,
            )
        steps[name] = step
    return steps


def _time_path(leaves: Sequence[StepRecord]) -> list[str]:
    """Walk back from the visit that finished last, each time to the latest finisher before it."""
    if not leaves:
        return []
    current = max(leaves, key=lambda r: (r.finished_at, r.seq))
    path = [current]
    while True:
        start = current.started_at
        earlier = [
            r for r in leaves if r.seq < current.seq and r.finished_at and start and r.finished_at <= start
        ]
        if not earlier:
            break
        current = max(earlier, key=lambda r: (r.finished_at, r.seq))
        path.append(current)
    return [r.step for r in reversed(path)]


def _graph_path(workflow: Workflow[Any], history: Sequence[StepRecord]) -> list[str]:
    """The longest path (by recorded duration) along a dependency plan's edges."""
    deps = workflow.shape.deps
    assert deps is not None
    latest = {r.step: r for r in history}
    best: dict[str, tuple[float, list[str]]] = {}
    for name in deps:  # plan order is a topological order: a step follows what it waits for
        if name not in latest:
            continue
        before = max(
            (best[need] for need in deps[name] if need in best), default=(0.0, []), key=lambda b: b[0]
        )
        best[name] = (before[0] + _seconds(latest[name]), [*before[1], name])
    if not best:
        return []
    return max(best.values(), key=lambda b: b[0])[1]
