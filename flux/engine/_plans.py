"""Pure decisions about plans and recorded history: where a run continues, which plan it needs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from flux.engine import _keys
from flux.engine._positions import flow_resume_point, jumped
from flux.errors import InvalidInputError, PlanMismatchError, UnknownSignalError, WorkflowNotRegisteredError
from flux.plan import Workflow
from flux.records import EMPTY, JSON, RunRecord, StepRecord, replay_data
from flux.status import RunStatus, StepStatus

_DONE = (StepStatus.COMPLETED, StepStatus.SKIPPED)


def latest_visits(records: Iterable[StepRecord]) -> dict[str, StepRecord]:
    """The latest visit of each step, by step name."""
    return {record.step: record for record in records}


def resume_point(workflow: Workflow[Any], records: Sequence[StepRecord]) -> int:
    """The index of the first plan step whose latest visit is not completed or skipped.

    ``len(workflow.steps)`` when every step is done. Plans beyond a straight chain, and chains
    whose history holds a ``goto``, continue where their recorded visits say instead.
    """
    if not workflow.plain or jumped(records):
        return flow_resume_point(workflow, records)
    latest = latest_visits(records)
    for index, spec in enumerate(workflow.steps):
        visit = latest.get(spec.name)
        if visit is None or visit.status not in _DONE:
            return index
    return len(workflow.steps)


def run_header(
    plan: Workflow[Any],
    *,
    run_id: str,
    raw_input: JSON,
    now: datetime,
    owner: str,
    lease: timedelta,
    status: RunStatus = RunStatus.RUNNING,
    deadline: float | None = None,
    labels: Mapping[str, str] = EMPTY,
) -> RunRecord:
    """The stored fields of a new run of ``plan`` (executed, started, replayed or a child)."""
    return RunRecord(
        id=run_id,
        workflow=plan.name,
        fingerprint=plan.fingerprint,
        status=status,
        input=raw_input,
        created_at=now,
        updated_at=now,
        owner=owner,
        lease_expires_at=now + lease,
        deadline_at=None if deadline is None else now + timedelta(seconds=deadline),
        labels=labels,
    )


def check_input(plan: Workflow[Any], input: Any) -> tuple[Any, JSON]:
    """The typed input and its stored (JSON) form, once the plan's validators accept it.

    Raises:
        InvalidInputError: ``input`` does not fit the plan's input type or a validator.
    """
    typed, raw = plan.codec.accept(input)
    for check in plan.validators:
        name = getattr(check, "__qualname__", repr(check))
        try:
            ok = check(typed)
        except Exception as exc:
            raise InvalidInputError(
                f"input rejected by validator {name} of workflow {plan.name!r}: {exc}"
            ) from exc
        if ok is False:
            raise InvalidInputError(
                f"input rejected by validator {name} of workflow {plan.name!r}: it returned False "
                f"for {typed!r}"
            )
    return typed, raw


class WorkflowRegistry:
    """Every workflow version an engine knows, by name and plan fingerprint."""

    def __init__(self) -> None:
        self._versions: dict[str, dict[str, Workflow[Any]]] = {}

    def add(self, workflow: Workflow[Any]) -> None:
        """Register ``workflow`` (a new version of the same name is kept beside older ones)."""
        self._versions.setdefault(workflow.name, {})[workflow.fingerprint] = workflow

    def names(self) -> list[str]:
        """Registered workflow names, sorted."""
        return sorted(self._versions)

    def for_run(self, run: RunRecord) -> Workflow[Any]:
        """The registered version whose fingerprint matches the run's.

        Raises:
            WorkflowNotRegisteredError: no version of the run's workflow is registered.
            PlanMismatchError: versions exist, but none has the run's fingerprint.
        """
        versions = self._versions.get(run.workflow)
        if not versions:
            known = ", ".join(self.names()) or "none"
            raise WorkflowNotRegisteredError(
                f"run {run.id} belongs to workflow {run.workflow!r}, which this engine does not "
                f"know (registered: {known}); pass it in FluxEngine(workflows=[...]) or call "
                "engine.register(workflow) before resuming",
                run_id=run.id,
            )
        match = versions.get(run.fingerprint)
        if match is not None:
            return match
        newest = list(versions.values())[-1]
        differences = plan_differences(newest, run)
        raise PlanMismatchError(
            f"run {run.id} was started by a different version of workflow {run.workflow!r} "
            f"(fingerprint {run.fingerprint}, registered: {', '.join(versions)}). Differences: "
            + "; ".join(differences)
            + ". Register the version that started it (keep the old plan under the same name) "
            "or resume with from_step=.",
            run_id=run.id,
            differences=differences,
        )


def plan_differences(workflow: Workflow[Any], run: RunRecord) -> list[str]:
    """What the run's recorded history shows that ``workflow`` does not match: both sides, so
    a renamed step shows as its old name (ran, not in the plan) and its new one (not in the
    history). Plan steps beyond where the run has been are not differences."""
    planned = workflow.step_names
    found: list[str] = []
    recorded: list[str] = []
    for record in run.steps:
        name = record.step.split("[", 1)[0]  # a map item counts as its map step
        if name not in recorded:
            recorded.append(name)
    for name in recorded:
        if workflow.find(name) is None:
            found.append(f"step {name!r} ran in the run but is not in the plan")
    if found:  # steps gone from the plan: show what stands where the run has been instead
        for name in planned[: len(recorded) + 1]:
            if name not in recorded:
                found.append(f"plan step {name!r} is not in the run's history")
    order = [name for name in recorded if name in planned]
    if order != sorted(order, key=planned.index):
        found.append(f"steps ran in the order {order} but the plan orders them {list(planned)}")
    if not found:
        found.append(f"the plan's steps are now {list(planned)} (kinds or order changed)")
    return found


def open_signals(workflow: Workflow[Any] | None, records: Sequence[StepRecord]) -> dict[str, int]:
    """How many waits of the run may still take each signal name.

    Counts the wait steps whose latest visit is not completed, and any open visit waiting on a
    signal chosen by its handler (``flux.wait``).
    """
    latest = latest_visits(records)
    counts: dict[str, int] = {}
    dynamic = {r.step for r in latest.values() if r.waiting_for and r.status not in _DONE}
    for spec in workflow.shape.specs.values() if workflow is not None else ():
        visit = latest.get(spec.name)
        if spec.signal is not None and (visit is None or visit.status not in _DONE):
            counts[spec.signal] = counts.get(spec.signal, 0) + 1
    for name in dynamic:
        signal = latest[name].waiting_for
        if signal is not None and (
            workflow is None or getattr(workflow.find(name), "signal", None) != signal
        ):
            counts[signal] = counts.get(signal, 0) + 1
    return counts


def check_signal(workflow: Workflow[Any], run: RunRecord, signal: str) -> int:
    """Refuse a signal that no wait of the run will ever take; else how many waits may take it
    (a signal beyond that many queued ones would never be consumed).

    Raises:
        UnknownSignalError: no open wait takes ``signal`` (the message lists the names that
            can be sent).
    """
    open_waits = open_signals(workflow, run.steps)
    if signal not in open_waits:
        names = ", ".join(sorted(open_waits)) or "none (it waits for nothing more)"
        raise UnknownSignalError(
            f"run {run.id} will never wait for signal {signal!r}; it can take: {names}", run_id=run.id
        )
    return open_waits[signal]


def waits_on_time(run: RunRecord) -> datetime | None:
    """When a suspended run waits only on time (a sleep, a stored retry delay, its deadline),
    its due time; None when it waits for something from outside the process (a signal, a
    child run) or is not suspended."""
    if run.status != RunStatus.SUSPENDED or run.wake_at is None:
        return None
    for record in latest_visits(run.steps).values():
        if record.status == StepStatus.SUSPENDED and (
            record.waiting_for is not None or _keys.WAITING_CHILD in record.actions
        ):
            return None
    return run.wake_at


def data_before(records: Sequence[StepRecord], name: str) -> dict[str, JSON]:
    """The run's data as it was before step ``name`` first ran (all of it if it never ran):
    what ``resume(from_step=name)`` hands that step, so it never sees its own earlier
    changes, nor those of the steps after it."""
    for index, record in enumerate(records):
        if record.step == name or record.step.startswith(f"{name}["):
            return replay_data(records[:index])
    return replay_data(records)
