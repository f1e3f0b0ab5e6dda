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
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs

from flux.context import ChildCall
from flux.engine._driver import RunDriver
from flux.engine._keys import CHILD
from flux.engine._plans import check_input, run_header
from flux.engine._state import OPEN, ChildPending, EngineContext, RunState
from flux.errors import ChildWorkflowError, InvalidRunStateError, RunError
from flux.plan import Workflow
from flux.records import ErrorInfo, RunRecord
from flux.result import RunResult
from flux.status import RunStatus, StepStatus

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


def child_ids(state: RunState) -> list[str]:
    """Every child run id the run's visits recorded."""
    found = []
    for record in state.records:
        if record.actions:
            for key, value in record.actions.items():
                if key.startswith(CHILD) and isinstance(value, str):
                    found.append(value)
    return found


@attrs.frozen(kw_only=True)
class ChildHost:
    """What child runs need of the engine, as callables (the engine is the layer above)."""

    env: EngineContext
    register: Callable[[Any], Workflow[Any]]
    """Make a workflow (or builder) known; returns its plan."""
    drive: Callable[[RunDriver, int], Awaitable[RunResult]]
    """Drive a run in this engine until it ends or suspends."""
    running: Callable[[str], asyncio.Future[RunResult | None] | None]
    """The task driving a run in this engine, if any."""
    labels: Callable[[str], Mapping[str, str]]
    """The labels of a run driven here (a child run gets its parent's)."""
    resume: Callable[[str], Awaitable[RunResult]]
    cancel: Callable[[str, str], Awaitable[RunResult]]
    ended: Callable[[str], None]
    """A run ended here: wake its waiters and the workers."""
    notify: Callable[[str, str], None]
    """Wake workers, here and elsewhere: ``(reason, run id)``."""


class Children:
    """Links runs to their child runs: ``ctx.run_child``, and the hooks at a run's end and
    cancellation (:class:`~flux.engine._state.RunHooks`)."""

    def __init__(self, host: ChildHost) -> None:
        self.host = host

    async def run_child(self, call: ChildCall, workflow: Any, input: Any) -> RunResult:
        """``ctx.run_child``: start (or find) the child run, drive it, return its result."""
        host, storage = self.host, self.host.env.storage
        child_id = child_run_id(call.run_id, call.step, call.seq, call.number)
        plan = host.register(workflow)
        run = await storage.load(child_id)
        if run is None:
            result = await self._start(call, plan, child_id, input)
        else:
            result = await self._attach(run)
        if not result.status.finished:
            raise ChildPending(child_id, str(result.status))
        await storage.take_signal(call.run_id, wake_signal(child_id), call.seq)
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

    async def _start(self, call: ChildCall, plan: Workflow[Any], child_id: str, input: Any) -> RunResult:
        env = self.host.env
        typed, raw = check_input(plan, input)
        if call.record is not None:  # before the child exists: a resumed parent finds its id here
            key = CHILD if call.number == 1 else f"{CHILD}.{call.number}"
            await call.record(call.seq, call.step, key, child_id)
        header = run_header(
            plan,
            run_id=child_id,
            raw_input=raw,
            now=env.clock.now(),
            owner=env.owner,
            lease=env.lease,
            deadline=plan.deadline,
            labels=self.host.labels(call.run_id),
        )
        # Shielded: a parent attempt that times out or is cancelled leaves the child running (a
        # cancelled parent cancels it explicitly); the next attempt finds it by its id.
        return await asyncio.shield(self.host.drive(RunDriver(env, plan, header, [], typed), 0))

    async def _attach(self, run: RunRecord) -> RunResult:
        """The result of an existing child, driving it on if it is due and nobody else does."""
        if run.status.finished:
            return RunResult.from_record(run)
        ending = self.host.running(run.id)
        if ending is not None:
            result = await ending
            if result is not None:
                return result
            run = await self.host.env.storage.load(run.id) or run  # its drive failed
        now = self.host.env.clock.now()
        due = run.status in (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.ROLLING_BACK) or (
            run.status == RunStatus.SUSPENDED and run.wake_at is not None and run.wake_at <= now
        )
        if due:
            try:
                return await asyncio.shield(self.host.resume(run.id))
            except InvalidRunStateError:
                pass  # another live process drives it
        return RunResult.from_record(run)

    async def finished(self, state: RunState) -> None:
        """A run ended: tell its waiters; if it is a child, wake its parent."""
        run_id = state.header.id
        parent = parent_of(run_id)
        if parent is not None:
            env = self.host.env
            stored = await env.storage.add_signal(parent, wake_signal(run_id), None, env.clock.now())
            if stored is not None:
                self.host.notify("signal", parent)
        self.host.ended(run_id)

    async def cancelled(self, state: RunState, error: ErrorInfo) -> None:
        """A run is being cancelled: fail its unfinished visits and cancel its children."""
        env = self.host.env
        now = env.clock.now()
        for record in state.records:
            if record.status in OPEN:
                state.put(attrs.evolve(record, status=StepStatus.FAILED, error=error, finished_at=now))
        for child_id in child_ids(state):
            try:
                child = await env.storage.load(child_id)
                if child is not None and not child.status.finished:
                    await self.host.cancel(child_id, f"its parent run {state.header.id} was cancelled")
            except RunError:
                continue
