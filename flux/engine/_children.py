"""Child workflows: ``ctx.run_child`` and ``.child`` steps, and the hooks that link runs.

A child run is a run of its own in storage. Its id comes from the parent's run id, step and
visit (``<parent>/<step>#<seq>``, then ``.2``, ``.3``... for further children of one visit), and
the parent's step record keeps it under ``flux:child``; a resumed parent therefore finds the
same child instead of starting another. The child is driven inline; if it suspends, the
parent's visit suspends too and its handler runs again once the child has ended. The child's
end stores a signal on the parent (``flux:child:<child id>``), which makes a suspended parent
due: a worker resumes it. Cancelling a parent cancels its unfinished children.
"""

from __future__ import annotations

import asyncio
import contextvars
import re
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import attrs

from flux.engine import _keys
from flux.engine._visit import OPEN, ChildPending
from flux.errors import ChildWorkflowError, InvalidRunStateError, RunError
from flux.events import WorkflowResume
from flux.records import EMPTY, ErrorInfo, RunRecord, replay_data
from flux.result import RunResult
from flux.serde import copy_json
from flux.status import RunStatus, StepStatus

if TYPE_CHECKING:
    from flux.builder import WorkflowBuilder
    from flux.context import StepContext
    from flux.engine._driver import Outcome, RunDriver
    from flux.engine._engine import FluxEngine
    from flux.plan import StepSpec, Workflow

CURRENT_ENGINE: contextvars.ContextVar[FluxEngine | None] = contextvars.ContextVar(
    "flux_current_engine", default=None
)
"""The engine driving the current task's run (set by ``FluxEngine._drive``)."""

_CHILD_ID = re.compile(r"^(?P<parent>.+)/(?P<step>[^/#]+)#(?P<seq>\d+)(?:\.(?P<n>\d+))?$")


def child_run_id(parent: str, step: str, seq: int, n: int) -> str:
    """The id of the ``n``-th child (1-based) started by visit ``seq`` of ``step`` in ``parent``."""
    return f"{parent}/{step}#{seq}" + (f".{n}" if n > 1 else "")


def parent_of(run_id: str) -> str | None:
    """The parent run id encoded in a child run's id, or None for a run that is not a child."""
    if "#" not in run_id:
        return None
    found = _CHILD_ID.match(run_id)
    return None if found is None else found["parent"]


def wake_signal(child_id: str) -> str:
    """The signal a child's end stores on its parent."""
    return f"flux:child:{child_id}"


async def run_child(
    ctx: StepContext[Any], workflow: Workflow[Any] | WorkflowBuilder[Any], input: Any
) -> RunResult:
    """``ctx.run_child``: start (or find) the child run, drive it, return its result."""
    engine = CURRENT_ENGINE.get()
    if engine is None:
        raise RuntimeError("ctx.run_child works only in a step run by a FluxEngine")
    n = getattr(ctx, "_children", 0) + 1
    ctx._children = n
    child_id = child_run_id(ctx.run_id, ctx.step, ctx._seq, n)
    plan = engine.register(workflow)
    run = await engine.storage.load(child_id)
    if run is None:
        result = await _start(engine, ctx, plan, child_id, input, n)
    else:
        result = await _attach(engine, run)
    if not result.status.finished:
        raise ChildPending(child_id, str(result.status))
    await engine.storage.take_signal(ctx.run_id, wake_signal(child_id), ctx._seq)
    if result.status != RunStatus.COMPLETED:
        error = result.error
        raise ChildWorkflowError(
            f"child run {child_id} of workflow {result.workflow!r} ended {result.status}"
            + (f": {error.type}: {error.message}" if error is not None else ""),
            run_id=child_id,
            status=str(result.status),
            error=error,
        )
    return result


async def _start(
    engine: FluxEngine, ctx: StepContext[Any], plan: Workflow[Any], child_id: str, input: Any, n: int
) -> RunResult:
    from flux.engine._driver import RunDriver
    from flux.engine._engine import _check_validators

    typed, raw = plan.codec.accept(input)
    _check_validators(plan, typed)
    if ctx._recorder is not None:  # before the child exists: a resumed parent finds its id here
        await ctx._recorder(ctx._seq, ctx.step, _keys.CHILD if n == 1 else f"{_keys.CHILD}.{n}", child_id)
    env = engine._env
    now = engine.clock.now()
    parent = engine._active.get(ctx.run_id)
    header = RunRecord(
        id=child_id,
        workflow=plan.name,
        fingerprint=plan.fingerprint,
        status=RunStatus.RUNNING,
        input=raw,
        created_at=now,
        updated_at=now,
        owner=engine.owner,
        lease_expires_at=now + env.lease,
        deadline_at=None if plan.deadline is None else now + timedelta(seconds=plan.deadline),
        labels=parent.header.labels if parent is not None else EMPTY,
    )
    # Shielded: a parent attempt that times out or is cancelled leaves the child running (a
    # cancelled parent cancels it explicitly); the next attempt finds it by its id.
    return await asyncio.shield(engine._drive(RunDriver(env, plan, header, [], typed), 0))


async def _attach(engine: FluxEngine, run: RunRecord) -> RunResult:
    """The result of an existing child, driving it on if it is due and nobody else does."""
    if run.status.finished:
        return RunResult.from_record(run)
    task = engine._tasks.get(run.id)
    if task is not None and run.id in engine._active:
        return await asyncio.shield(task)
    now = engine.clock.now()
    due = run.status in (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.ROLLING_BACK) or (
        run.status == RunStatus.SUSPENDED and run.wake_at is not None and run.wake_at <= now
    )
    if due:
        try:
            return await asyncio.shield(engine.resume(run.id))
        except InvalidRunStateError:
            pass  # another live process drives it
    return RunResult.from_record(run)


def child_ids(driver: RunDriver) -> list[str]:
    """Every child run id the run's visits recorded."""
    found = []
    for record in driver.records:
        if record.actions:
            for key, value in record.actions.items():
                if key.startswith(_keys.CHILD) and isinstance(value, str):
                    found.append(value)
    return found


class RunHooks:
    """What the driver calls at a run's end and cancellation (links parents and children)."""

    def __init__(self, engine: FluxEngine) -> None:
        self.engine = engine

    async def finished(self, driver: RunDriver) -> None:
        """A run ended: if it is a child, wake its parent."""
        run_id = driver.header.id
        parent = parent_of(run_id)
        if parent is None:
            return
        engine = self.engine
        stored = await engine.storage.add_signal(parent, wake_signal(run_id), None, engine.clock.now())
        if stored is not None:
            engine.notify("signal", parent)

    async def cancelled(self, driver: RunDriver, error: ErrorInfo) -> None:
        """A run is being cancelled: fail its unfinished visits and cancel its children."""
        now = self.engine.clock.now()
        for record in driver.records:
            if record.status in OPEN:
                driver._put(attrs.evolve(record, status=StepStatus.FAILED, error=error, finished_at=now))
        for child_id in child_ids(driver):
            try:
                child = await self.engine.storage.load(child_id)
                if child is not None and not child.status.finished:
                    await self.engine.cancel(child_id, f"its parent run {driver.header.id} was cancelled")
            except RunError:
                continue


async def suspend_for_child(
    driver: RunDriver, spec: StepSpec, seq: int, attempt: int, pending: ChildPending
) -> Outcome | Any:
    """A plain chain's step waits for a child run: suspend the run; its handler runs again
    (the same attempt) once the child has ended."""
    from flux.engine._driver import Outcome

    driver.data.load(copy_json(replay_data(driver.records)).items())
    record = driver.records[seq]
    waiting = attrs.evolve(
        record,
        status=StepStatus.SUSPENDED,
        attempts=attempt - 1,
        wake_at=None,
        actions={**record.actions, _keys.WAITING_CHILD: pending.run_id},
    )
    await driver._suspend(waiting, f"waiting for child run {pending.run_id}")
    # A child that ended while this run was still marked running did not wake it: look again.
    child = await driver.env.storage.load(pending.run_id)
    if child is None or not child.status.finished:
        return Outcome.SUSPENDED
    now = driver.env.clock.now()
    claimed = await driver.env.storage.claim(
        driver.header.id, driver.env.owner, now + driver.env.lease, now=now
    )
    if claimed is None:
        return Outcome.SUSPENDED
    driver.header = attrs.evolve(claimed, steps=())
    driver._event(WorkflowResume, from_step=spec.name)
    return await driver._run_step(spec, driver.records[seq])
