"""``check_compatible``: which stored runs a new version of a plan would strand.

The plan analogue of Temporal's replayer: before deploying a changed workflow, list the
unfinished runs whose plan fingerprint the new version does not match and that no registered
older version would take. Each comes with the differences its history shows.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from flux.builder import WorkflowBuilder, as_workflow
from flux.engine._plans import plan_differences
from flux.plan import Workflow
from flux.records import RunFilter
from flux.status import RunStatus
from flux.storage.protocol import Storage

_UNFINISHED = frozenset(status for status in RunStatus if not status.finished)


@attrs.frozen(kw_only=True)
class StrandedRun:
    """A stored, unfinished run that the checked plan could not continue.

    Attributes:
        run_id: the run's id.
        workflow: its workflow name.
        status: where it stands (running, suspended, pending, rolling back).
        fingerprint: the fingerprint of the plan version that started it.
        differences: what its recorded history shows that the new plan does not match.
    """

    run_id: str
    workflow: str
    status: RunStatus
    fingerprint: str
    differences: tuple[str, ...]

    def __str__(self) -> str:
        return (
            f"run {self.run_id} ({self.workflow}, {self.status.value}, fingerprint {self.fingerprint}): "
            + "; ".join(self.differences)
        )


async def check_compatible(
    storage: Storage,
    workflow: Workflow[Any] | WorkflowBuilder[Any],
    *,
    versions: Iterable[Workflow[Any] | WorkflowBuilder[Any]] = (),
) -> list[StrandedRun]:
    """The unfinished runs of ``workflow``'s name in ``storage`` that it would strand, oldest first.

    A run is stranded when its plan fingerprint is neither ``workflow``'s nor that of one of
    ``versions`` (older versions you keep registered with ``FluxEngine(workflows=[...])``).
    An empty list means the new plan is safe to deploy. ``storage`` is opened (``init``) if
    needed and left open.

    >>> import asyncio
    >>> from flux import MemoryStorage, create_workflow
    >>> asyncio.run(check_compatible(MemoryStorage(), create_workflow("f").step("a", print)))
    []

    Raises:
        ValueError: one of ``versions`` is a different workflow (another name).
    """
    plan = as_workflow(workflow)
    known = {plan.fingerprint}
    for version in versions:
        older = as_workflow(version)
        if older.name != plan.name:
            raise ValueError(
                f"versions= holds workflow {older.name!r}, but the checked workflow is {plan.name!r}; "
                "pass older versions of the same workflow only"
            )
        known.add(older.fingerprint)
    await storage.init()
    runs = await storage.list(RunFilter(workflow=plan.name, status=_UNFINISHED))
    return [
        StrandedRun(
            run_id=run.id,
            workflow=run.workflow,
            status=run.status,
            fingerprint=run.fingerprint,
            differences=tuple(plan_differences(plan, run)),
        )
        for run in reversed(runs)  # oldest first
        if run.fingerprint not in known
    ]
