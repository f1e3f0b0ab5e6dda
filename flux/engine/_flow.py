"""Schedules a run's visits: chains, dependency graphs, goto and failure routes, constructs.

Every plan runs here, a straight chain too. A chain runs its steps one after the other from a
position (``_positions.chain_position``), following ``goto`` and ``on_failure`` routes; a
dependency plan starts each step once the steps it waits for are done; constructs
(``_constructs.py``) run nested chains and map items side by side. Each visit is run by the
one visit loop (``_visit.py``). Visits that must wait are collected; once nothing else can
run, the run suspends (due at the earliest time any of them waits for) and resumes from its
records.

A chain pays only for what it uses: visits are counted (for ``max_visits``) only once a
``goto`` has happened, and a visit shares the run's data unless others run beside it.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from flux._shape import TOP, ChainInfo
from flux.engine._constructs import RUNNERS, cancel_tasks
from flux.engine._keys import KIND, WAITING_CHILD
from flux.engine._positions import OPEN, Position, chain_position, flow_resume_point, jumped, satisfied
from flux.engine._state import Done, Failed, Result, RunState, Suspended
from flux.engine._visit import Call, Visitor
from flux.errors import MaxVisitsError
from flux.events import StepStart, WorkflowResume, WorkflowSuspend
from flux.plan import StepSpec, Workflow
from flux.records import ErrorInfo, StepRecord
from flux.status import RunStatus, StepStatus

_NO_GOTO_IN_GRAPH = "goto is not available in a dependency plan (order its steps with after=)"


_CALLS: dict[int, tuple[Workflow[Any], dict[str, Call], dict[str, Call]]] = {}
_CALLS_KEPT = 256


def _calls_of(plan: Workflow[Any], *, replaying: bool) -> dict[str, Call]:
    """The :class:`Call` of each step of ``plan`` made so far (they hold nothing of a run, so
    runs of one plan share them: a Call costs more to make than a trivial step to run)."""
    entry = _CALLS.get(id(plan))
    if entry is None or entry[0] is not plan:  # the entry holds its plan: its id stays unique
        if len(_CALLS) >= _CALLS_KEPT:
            del _CALLS[next(iter(_CALLS))]
        entry = _CALLS[id(plan)] = (plan, {}, {})
    return entry[2] if replaying else entry[1]


class Flow(Visitor):
    """Schedules the steps of one run of a plan beyond a straight chain."""

    def __init__(self, state: RunState) -> None:
        super().__init__(state)
        self.plan = state.workflow
        self.shape = self.plan.shape
        self._calls = _calls_of(self.plan, replaying=state.recorded is not None)
        self.reindex()

    def reindex(self) -> None:
        """Rebuild the lookups of recorded visits (each step's latest, visit counts)."""
        records = self.d.records
        self.latest: dict[str, StepRecord] = {record.step: record for record in records}
        self.visits: Counter[str] | None = None
        """Visits per step name; counted only once a goto has happened (None before)."""
        if records and jumped(records):
            self._count()

    def _count(self) -> None:
        self.visits = Counter(record.step for record in self.d.records)

    async def run(self, start: int) -> Result:
        """Run from top-level index ``start`` until the run is done, fails, or suspends and
        cannot go on here (Suspended)."""
        while True:
            if self.shape.deps is None:
                result = await self._top_chain(start)
            else:
                result = await self._graph(start)
            if not isinstance(result, Suspended) or not await self.suspend(result):
                return result
            self.reindex()  # woken while suspending: go on from the records
            start = flow_resume_point(self.plan, self.d.records)

    # --- chains ---------------------------------------------------------------------------

    async def _top_chain(self, start: int) -> Result:
        info = self.shape.chain(TOP)
        position = chain_position(info, self.latest, -1)
        if position.index != start:  # resume(from_step=...)
            record = self.latest.get(info.steps[start].name) if start < len(info.steps) else None
            position = Position(start, record if record is not None and record.status in OPEN else None)
        return await self.chain(info, position)

    def position(self, info: ChainInfo, base: int) -> Position:
        """Where a nested chain of the construct visit ``base`` continues."""
        return chain_position(info, self.latest, base)

    async def chain(self, info: ChainInfo, position: Position) -> Result:
        """Run a chain's steps in order from ``position`` (following goto and failure routes)."""
        at, record, failure, last = position.index, position.record, position.failure, position.last
        steps = info.steps
        while at < len(steps):
            spec = steps[at]
            if record is None and self.visits is not None and self.visits[spec.name] >= spec.max_visits:
                return self._refuse(spec)
            result = await self.step(spec, record, info, failure)
            record = failure = None
            if isinstance(result, Done):
                last = result.record
                if result.goto is None:
                    at = info.next_after(at + 1)
                else:
                    if self.visits is None:
                        self._count()
                    at = info.index[result.goto]
            elif isinstance(result, Failed) and spec.on_failure is not None:
                failure = result.record.error
                at = info.index[spec.on_failure]
            else:
                return result
        return Done(last)

    async def step(
        self, spec: StepSpec, record: StepRecord | None, chain: ChainInfo | None, failure: ErrorInfo | None
    ) -> Result:
        """One visit of any kind of step; ``chain`` is where a goto may jump (None: nowhere)."""
        if record is None and self.visits is not None:
            self.visits[spec.name] += 1
        runner = RUNNERS.get(spec.kind)
        if runner is not None:
            return await runner(self, spec, record)
        call = self._calls.get(spec.name)
        if call is None:
            targets: Mapping[str, int] | None = None
            if chain is not None:
                targets = chain.index if spec.goto is None else {t: chain.index[t] for t in spec.goto}
            call = self._calls[spec.name] = Call(
                name=spec.name,
                fn=spec.handler,
                is_async=spec.is_async,
                targets=targets,
                no_goto=_NO_GOTO_IN_GRAPH,
                plain=spec.kind == "step" and spec.when is None and self.d.recorded is None,
            )
        if call.plain and record is None and failure is None and not self.side_by_side:
            return await self._attempts(spec, call, None, 0, None)  # nothing to decide first
        return await self.visit(spec, record, call, failure)

    def _refuse(self, spec: StepSpec) -> Failed:
        assert self.visits is not None
        record = self.d.new_record(spec.name)
        error = MaxVisitsError(
            f"step {spec.name!r} was reached {self.visits[spec.name] + 1} times but allows "
            f"max_visits={spec.max_visits}; a goto loop that never ends? Give the loop an exit, "
            f"or raise max_visits= on {spec.name!r} if it is meant to go round that often"
        )
        self.visits[spec.name] += 1
        return self.d.fail(record, ErrorInfo.from_exception(error, step=spec.name))

    # --- constructs' shared parts ---------------------------------------------------------

    async def open_construct(self, spec: StepSpec, record: StepRecord | None) -> StepRecord:
        """Start (or continue) the visit of a construct step; checkpointed before its parts run."""
        d = self.d
        if record is None:
            record = d.new_record(spec.name, {KIND: spec.kind})
        if record.status == StepStatus.PENDING:
            record = attrs.evolve(record, status=StepStatus.RUNNING, attempts=1)
            d.put(record)
            d.event(StepStart, step=spec.name, attempt=1)
            await d.flush(status=RunStatus.RUNNING, wake_at=None)
        return record

    async def settle(self) -> None:
        """Checkpoint what is pending now: a strand of work ended without starting another visit
        (whose start would have carried it), and other strands may run on for long."""
        if self.d.pending:
            await self.d.flush()

    def cancel_open(self, belongs: Callable[[str], bool], base: int, reason: str) -> None:
        """Fail the unfinished visits after ``base`` whose name ``belongs`` (cancelled work)."""
        d, now = self.d, self.env.clock.now()
        error = ErrorInfo(type="Cancelled", message=reason)
        for record in d.records[base + 1 :]:
            if record.status in OPEN and belongs(record.step):
                d.put(attrs.evolve(record, status=StepStatus.FAILED, error=error, finished_at=now))

    # --- dependency plans -----------------------------------------------------------------

    async def _graph(self, start: int) -> Result:
        shape, top = self.shape, self.shape.chain(TOP)
        deps = shape.deps
        assert deps is not None
        rerun: set[str] = set()
        if start < len(top.steps) and start != flow_resume_point(self.plan, self.d.records):
            rerun = {top.steps[start].name} | shape.descendants(top.steps[start].name)
        done = satisfied(shape, self.latest, rerun)
        order = {spec.name: i for i, spec in enumerate(top.steps)}
        running: dict[asyncio.Task[Result], str] = {}
        stands_for: dict[str, str] = {}
        launched: set[str] = set()
        waiting: list[Suspended] = []

        def launch(name: str, failure: ErrorInfo | None = None) -> None:
            record = self.latest.get(name)
            if record is not None and record.status not in OPEN:
                record = None
            spec = shape.specs[name]
            launched.add(name)
            running[asyncio.ensure_future(self.step(spec, record, None, failure))] = name

        def ready(names: Iterable[str]) -> None:
            for name in sorted(names, key=order.__getitem__):
                if name not in done and name not in launched and all(n in done for n in deps[name]):
                    launch(name)

        for spec in top.steps:
            record = self.latest.get(spec.name)
            routed = record is not None and record.status == StepStatus.FAILED and spec.name not in rerun
            if spec.name not in done and routed and spec.on_failure is not None:
                stands_for[spec.on_failure] = spec.name
                launched.add(spec.name)
                launch(spec.on_failure, record.error if record is not None else None)
        ready(name for name in deps if name not in top.handlers)
        self.side_by_side += 1
        try:
            while running:
                finished, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                started = len(launched)
                for task in sorted(finished, key=lambda t: order[running[t]]):
                    name = running.pop(task)
                    result = task.result()
                    spec = shape.specs[name]
                    if isinstance(result, Done):
                        node = stands_for.get(name, name)
                        done.update((name, node))
                        ready(shape.dependents.get(node, ()))
                    elif isinstance(result, Suspended):
                        waiting.append(result)
                    elif spec.on_failure is not None:
                        stands_for[spec.on_failure] = stands_for.get(name, name)
                        launch(spec.on_failure, result.record.error)
                    else:
                        await cancel_tasks(running)
                        self.cancel_open(lambda _: True, -1, f"step {name!r} failed")
                        return result
                if len(launched) == started:
                    await self.settle()
        finally:
            self.side_by_side -= 1
            await cancel_tasks(running)
        return Suspended.of(waiting) if waiting else Done(None)

    # --- suspending -----------------------------------------------------------------------

    async def suspend(self, waiting: Suspended) -> bool:
        """Suspend the run until the earliest time one of the waiting visits waits for.

        Returns True when, meanwhile, something they wait for has come (a signal, a child's
        end) and the run was claimed again: the caller goes on.
        """
        d, storage, records = self.d, self.env.storage, waiting.records
        wakes = [r.wake_at for r in records if r.wake_at is not None]
        wake = min(wakes) if wakes else None
        deadline = d.header.deadline_at
        if deadline is not None:
            wake = deadline if wake is None else min(wake, deadline)
        first = min(records, key=lambda r: r.seq)
        d.event(WorkflowSuspend, step=first.step, reason=waiting.reason)
        await d.flush(status=RunStatus.SUSPENDED, wake_at=wake, lease_expires_at=None)
        if not await self._any_ready(records):
            return False
        now = self.env.clock.now()
        claimed = await storage.claim(d.header.id, self.env.owner, now + self.env.lease, now=now)
        if claimed is None:
            return False  # another process resumed it and goes on
        d.set_header(claimed)
        d.event(WorkflowResume, from_step=first.step)
        return True

    async def _any_ready(self, records: Iterable[StepRecord]) -> bool:
        """Did something a suspended visit waits for arrive while the run was still running?"""
        storage, run_id, now = self.env.storage, self.d.header.id, self.env.clock.now()
        for record in records:
            signal = record.waiting_for
            if signal is not None and await storage.take_signal(run_id, signal, record.seq) is not None:
                return True
            child = record.actions.get(WAITING_CHILD)
            if child is not None:
                run = await storage.load(child)
                if run is not None and run.status.finished:
                    return True
            if record.wake_at is not None and record.wake_at <= now:
                return True
        return False
