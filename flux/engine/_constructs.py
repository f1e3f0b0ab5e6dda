"""Running constructs: parallel groups, dynamic maps and branches.

Each construct has a visit record of its own (checkpointed before its parts run) and records
every decision on it: a map's item list, a branch's key. Nested visits are identified by name
(``step``, or ``map[i]`` for map items) and belong to the construct's latest visit (their
``seq`` is higher), so a resumed run continues each branch and each item where it stood.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any, Protocol

import attrs

from flux._shape import ChainInfo, PlanShape
from flux.constructs import DEFAULT_CASE, BranchSpec, Chain, MapSpec, ParallelSpec
from flux.engine._attempt import maybe_await
from flux.engine._keys import CASE, ITEMS, KEY
from flux.engine._positions import Position
from flux.engine._state import OPEN, Done, Failed, Result, RunState, Suspended
from flux.engine._waits import Call
from flux.plan import StepSpec
from flux.records import JSON, ErrorInfo, StepRecord
from flux.serde import check_json, copy_json
from flux.status import StepStatus


class Flow(Protocol):
    """What a construct needs of the flow that runs it (``_flow.Flow``)."""

    d: RunState
    shape: PlanShape
    latest: dict[str, StepRecord]
    side_by_side: int

    async def open_construct(self, spec: StepSpec, record: StepRecord | None) -> StepRecord:
        """Start (or continue) the visit of a construct step."""

    def position(self, info: ChainInfo, base: int) -> Position:
        """Where a nested chain of the construct visit ``base`` continues."""

    async def chain(self, info: ChainInfo, position: Position) -> Result:
        """Run a chain's steps in order from ``position``."""

    async def visit(
        self, spec: StepSpec, record: StepRecord | None, call: Call, failure: ErrorInfo | None = None
    ) -> Result:
        """Run one visit."""

    async def settle(self) -> None:
        """Checkpoint what is pending now."""

    def cancel_open(self, belongs: Callable[[str], bool], base: int, reason: str) -> None:
        """Fail the unfinished visits after ``base`` whose name ``belongs``."""


Runner = Callable[[Flow, StepSpec, "StepRecord | None"], Awaitable[Result]]


# --- parallel groups ------------------------------------------------------------------------


async def run_parallel(flow: Flow, spec: StepSpec, record: StepRecord | None) -> Result:
    """Run every branch of a group side by side; each branch's steps in order."""
    group = spec.construct
    assert isinstance(group, ParallelSpec)
    record = await flow.open_construct(spec, record)
    base, where = record.seq, flow.shape.chain_of[spec.name]
    limit = asyncio.Semaphore(group.concurrency) if group.concurrency else None

    async def branch(chain: Chain) -> Result:
        info = flow.shape.chain((*where, spec.name, chain.name))
        if limit is None:
            result = await flow.chain(info, flow.position(info, base))
        else:
            async with limit:
                result = await flow.chain(info, flow.position(info, base))
        await flow.settle()
        return result

    flow.side_by_side += 1
    tasks = {asyncio.ensure_future(branch(chain)): i for i, chain in enumerate(group.branches)}
    results: dict[int, Result] = {}
    try:
        pending = set(tasks)
        while pending:
            finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in sorted(finished, key=tasks.__getitem__):
                results[tasks[task]] = task.result()
            if group.fail_fast and any(isinstance(r, Failed) for r in results.values()):
                break
    finally:
        flow.side_by_side -= 1
        await cancel_tasks(tasks)
    failures = [results[i] for i in sorted(results) if isinstance(results[i], Failed)]
    if failures:
        members = flow.shape.members[spec.name]
        flow.cancel_open(members.__contains__, base, f"parallel group {spec.name!r}: another branch failed")
        first = failures[0]
        assert isinstance(first, Failed) and first.record.error is not None
        return flow.d.fail(flow.d.records[base], first.record.error)
    waiting = [r for _, r in sorted(results.items()) if isinstance(r, Suspended)]
    if waiting:
        return Suspended.of(waiting)
    output: dict[str, JSON] = {}
    for i, chain in enumerate(group.branches):
        last = results[i]
        output[chain.name] = last.record.output if isinstance(last, Done) and last.record else None
    return Done(flow.d.complete(flow.d.records[base], output))


# --- maps -----------------------------------------------------------------------------------


def item_name(step: str, start: int, stop: int, batched: bool) -> str:
    """The record name of a map item (``step[i]``) or batch (``step[i:j]``)."""
    return f"{step}[{start}:{stop}]" if batched else f"{step}[{start}]"


def _item_call(
    fn: Callable[..., Any], items: list[JSON], batched: bool, is_async: bool
) -> Callable[..., Any]:
    if not batched:
        item = items[0]
        return lambda ctx: fn(ctx, item)
    if is_async:

        async def batch(ctx: Any) -> list[Any]:
            return [await fn(ctx, item) for item in items]

        return batch
    return lambda ctx: [fn(ctx, item) for item in items]


class _ItemFailed(Exception):
    def __init__(self, failed: Failed) -> None:
        super().__init__("a map item failed")
        self.failed = failed


async def _items_of(flow: Flow, spec: StepSpec, record: StepRecord) -> list[JSON] | Failed:
    """The map's items: recorded on its visit the first time ``over`` is evaluated."""
    mapping = spec.construct
    assert isinstance(mapping, MapSpec)
    d = flow.d
    recorded = d.records[record.seq].actions.get(ITEMS)
    if recorded is not None:
        return list(recorded)
    try:
        items = list(await maybe_await(mapping.over(d.context(spec.name, record.seq, 1, d.copy_data()))))
        check_json(items, f"the items of map step {spec.name!r}", step=spec.name)
    except Exception as exc:
        return d.fail(record, ErrorInfo.from_exception(exc, step=spec.name))
    items = list(copy_json(items))
    current = d.records[record.seq]
    d.put(attrs.evolve(current, actions={**current.actions, ITEMS: items}))
    await d.flush()
    return items


async def run_map(flow: Flow, spec: StepSpec, record: StepRecord | None) -> Result:
    """Call the map's function for every item, at most ``concurrency`` at once."""
    mapping = spec.construct
    assert isinstance(mapping, MapSpec)
    record = await flow.open_construct(spec, record)
    base = record.seq
    items = await _items_of(flow, spec, record)
    if isinstance(items, Failed):
        return items
    size = mapping.batch_size or 1
    batched = mapping.batch_size is not None
    results: list[JSON] = [None] * len(items)
    todo: list[tuple[int, int, str, StepRecord | None]] = []
    for start in range(0, len(items), size):
        stop = min(start + size, len(items))
        name = item_name(spec.name, start, stop, batched)
        prior = flow.latest.get(name)
        if prior is not None and prior.seq > base and prior.status == StepStatus.COMPLETED:
            _fill(results, start, stop, prior.output, batched)
            continue
        todo.append((start, stop, name, prior if prior is not None and prior.seq > base else None))
    waiting: list[Suspended] = []
    queue = iter(todo)

    async def worker() -> None:
        for start, stop, name, prior in queue:
            if prior is not None and prior.status not in OPEN:
                prior = None  # a failed item of an earlier attempt at the run: a new visit
            call = Call(
                name=name,
                fn=_item_call(mapping.fn, items[start:stop], batched, mapping.is_async),
                is_async=mapping.is_async,
                publish=False,
                no_goto="map items cannot use goto",
                may_wait=False,
            )
            result = await flow.visit(spec, prior, call)
            if isinstance(result, Done):
                _fill(results, start, stop, result.record.output if result.record else None, batched)
            elif isinstance(result, Suspended):
                waiting.append(result)
            else:
                raise _ItemFailed(result)
        await flow.settle()

    flow.side_by_side += 1
    workers = [
        asyncio.ensure_future(worker()) for _ in range(min(mapping.concurrency or len(todo), len(todo)))
    ]
    try:
        await asyncio.gather(*workers)
    except _ItemFailed as failed:
        await cancel_tasks(workers)
        prefix = spec.name + "["
        flow.cancel_open(lambda name: name.startswith(prefix), base, f"map {spec.name!r}: an item failed")
        error = failed.failed.record.error
        assert error is not None
        return flow.d.fail(flow.d.records[base], error)
    finally:
        flow.side_by_side -= 1
        await cancel_tasks(workers)
    if waiting:
        return Suspended.of(waiting)
    return Done(flow.d.complete(flow.d.records[base], results))


def _fill(results: list[JSON], start: int, stop: int, output: JSON, batched: bool) -> None:
    if batched:
        results[start:stop] = list(output or [None] * (stop - start))
    else:
        results[start] = output


# --- branches -------------------------------------------------------------------------------


class NoCaseError(KeyError):
    """A branch key matched no case and the branch has no default."""

    def __str__(self) -> str:
        return str(self.args[0])


async def run_branch(flow: Flow, spec: StepSpec, record: StepRecord | None) -> Result:
    """Evaluate (once) and record the branch key, then run the chosen chain."""
    branch = spec.construct
    assert isinstance(branch, BranchSpec)
    d = flow.d
    record = await flow.open_construct(spec, record)
    base = record.seq
    actions = d.records[base].actions
    if CASE not in actions:
        try:
            key = await maybe_await(branch.on(d.context(spec.name, record.seq, 1, d.copy_data())))
            check_json(key, f"the key of branch step {spec.name!r}", step=spec.name)
            label, chain = branch.choose(key)
            if chain is None:
                labels = ", ".join(repr(label) for label, _ in branch.cases)
                raise NoCaseError(
                    f"branch step {spec.name!r}: on= returned {key!r}, which matches no case "
                    f"({labels}) and there is no default=; add a case or a default"
                )
        except Exception as exc:
            return d.fail(d.records[base], ErrorInfo.from_exception(exc, step=spec.name))
        actions = {**actions, KEY: copy_json(key), CASE: DEFAULT_CASE if label is None else label}
        d.put(attrs.evolve(d.records[base], actions=actions))
        await d.flush()
    info = flow.shape.chain((*flow.shape.chain_of[spec.name], spec.name, actions[CASE]))
    result = await flow.chain(info, flow.position(info, base))
    if isinstance(result, Done):
        return Done(d.complete(d.records[base], actions[KEY]))
    if isinstance(result, Failed):
        assert result.record.error is not None
        return d.fail(d.records[base], result.record.error)
    return result


async def cancel_tasks(tasks: Mapping[asyncio.Task[Any], Any] | Collection[asyncio.Task[Any]]) -> None:
    """Cancel unfinished tasks and wait until they have stopped."""
    pending = [task for task in tasks if not task.done()]
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)


RUNNERS: dict[str, Runner] = {"parallel": run_parallel, "map": run_map, "branch": run_branch}
