"""Dynamic maps: one recorded visit per item (or batch), results in input order, a recorded
item list, bounded concurrency, per-item retries and failure, and resume after a crash."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest

from flux import FluxEngine, StepContext, StepRecord, Workflow, create_workflow
from flux.records import RunRecord
from flux.storage import MemoryStorage, Storage
from flux.testing import FakeClock


class Crash(BaseException):
    """Stands for the process dying in the middle of a step."""


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def engine(storage: Storage, clock: FakeClock) -> FluxEngine:
    return FluxEngine(storage, clock=clock)


def double(ctx: StepContext[Any], item: int) -> int:
    return item * 2


async def adouble(ctx: StepContext[Any], item: int) -> int:
    await asyncio.sleep(0)
    return item * 2


@pytest.mark.parametrize("fn", [double, adouble], ids=["sync", "async"])
async def test_each_item_is_a_recorded_visit_and_results_keep_input_order(
    engine: FluxEngine, fn: Any
) -> None:
    wf = (
        create_workflow("m")
        .step("load", lambda ctx: [3, 1, 2, 5])
        .map("double", fn, over=lambda ctx: ctx.outputs["load"], concurrency=3)
        .step("sum", lambda ctx: sum(ctx.outputs["double"]))
        .build()
    )
    result = await engine.execute(wf)
    assert result.status == "completed"
    assert result.outputs == {"load": [3, 1, 2, 5], "double": [6, 2, 4, 10], "sum": 22}
    items = {r.step: r.output for r in result.history if r.step.startswith("double[")}
    assert items == {"double[0]": 6, "double[1]": 2, "double[2]": 4, "double[3]": 10}
    record = next(r for r in result.history if r.step == "double")
    assert record.actions["flux:items"] == [3, 1, 2, 5]  # the item list is recorded once
    assert (await engine.get(result.id)).outputs == result.outputs  # no item keys leak in


async def test_items_see_their_own_step_name_and_idempotency_key(engine: FluxEngine) -> None:
    keys: list[str] = []

    def item(ctx: StepContext[Any], value: str) -> str:
        keys.append(ctx.idempotency_key)
        return f"{ctx.step}={value}"

    result = await engine.execute(
        create_workflow("m").map("m", item, over=lambda ctx: ["a", "b"]), run_id="r"
    )
    assert result.outputs["m"] == ["m[0]=a", "m[1]=b"]
    assert sorted(keys) == ["r:m[0]", "r:m[1]"]


async def test_batches_record_one_visit_per_batch(engine: FluxEngine) -> None:
    calls: list[int] = []

    def item(ctx: StepContext[Any], value: int) -> int:
        calls.append(value)
        return value + 100

    wf = create_workflow("m").map("m", item, over=lambda ctx: list(range(7)), batch_size=3)
    result = await engine.execute(wf)
    assert result.outputs["m"] == [100, 101, 102, 103, 104, 105, 106]
    assert [r.step for r in result.history if r.step != "m"] == ["m[0:3]", "m[3:6]", "m[6:7]"]
    assert sorted(calls) == list(range(7))


async def test_concurrency_bounds_the_items_in_flight(engine: FluxEngine) -> None:
    running, peak, finished, total = 0, 0, 0, 10
    changed = asyncio.Condition()

    async def item(ctx: StepContext[Any], value: int) -> int:
        nonlocal running, peak, finished
        async with changed:
            running += 1
            peak = max(peak, running)
            changed.notify_all()
            await changed.wait_for(lambda: running >= min(3, total - finished))
            running -= 1
            finished += 1
            changed.notify_all()
        return value

    result = await engine.execute(
        create_workflow("m").map("m", item, over=lambda ctx: list(range(total)), concurrency=3)
    )
    assert result.outputs["m"] == list(range(total))
    assert peak == 3


async def test_an_empty_list_maps_to_an_empty_output(engine: FluxEngine) -> None:
    result = await engine.execute(create_workflow("m").map("m", double, over=lambda ctx: []))
    assert result.status == "completed" and result.outputs["m"] == []


async def test_a_failing_item_is_retried_then_fails_the_map(engine: FluxEngine, clock: FakeClock) -> None:
    attempts: Counter[int] = Counter()

    def item(ctx: StepContext[Any], value: int) -> int:
        attempts[value] += 1
        if value == 2:
            raise ConnectionError(f"item {value} unreachable")
        if value == 1 and ctx.attempt == 1:
            raise ConnectionError("flaky once")
        return value

    wf = create_workflow("m").map("m", item, over=lambda ctx: [0, 1, 2], retries=2, concurrency=1)
    result = await engine.execute(wf)
    assert result.status == "failed"
    assert result.error is not None
    assert (result.error.step, result.error.type) == ("m[2]", "ConnectionError")
    assert attempts == {0: 1, 1: 2, 2: 3}
    statuses = {r.step: str(r.status) for r in result.history}
    assert statuses == {"m": "failed", "m[0]": "completed", "m[1]": "completed", "m[2]": "failed"}


async def test_a_failing_item_cancels_the_items_in_flight(engine: FluxEngine) -> None:
    never = asyncio.Event()

    async def item(ctx: StepContext[Any], value: int) -> int:
        if value == 0:
            raise ValueError("bad item")
        await never.wait()
        return value

    result = await engine.execute(
        create_workflow("m").map("m", item, over=lambda ctx: [0, 1, 2], concurrency=3)
    )
    assert result.status == "failed"
    cancelled = [r.step for r in result.history if r.error is not None and r.error.type == "Cancelled"]
    assert sorted(cancelled) == ["m[1]", "m[2]"]


@pytest.mark.parametrize(
    ("over", "fn", "message"),
    [
        (lambda ctx: [object()], double, "the items of map step 'm'"),
        (lambda ctx: 42, double, "not iterable"),
        (lambda ctx: [1], lambda ctx, item: __import__("flux").goto("m"), "map items cannot use goto"),
        (
            lambda ctx: [1],
            lambda ctx, item: __import__("flux").wait("s"),
            "map items cannot wait",
        ),
    ],
    ids=["not-json", "not-a-list", "goto", "wait"],
)
async def test_bad_items_and_directives_fail_the_map(
    engine: FluxEngine, over: Any, fn: Any, message: str
) -> None:
    result = await engine.execute(create_workflow("m").map("m", fn, over=over))
    assert result.status == "failed"
    assert result.error is not None and message in result.error.message


class CountingStorage(MemoryStorage):
    """Remembers how many step records, and how many item results, each checkpoint wrote."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[list[StepRecord]] = []

    async def checkpoint(self, run: RunRecord, steps: Sequence[StepRecord] = ()) -> None:
        self.writes.append(list(steps))
        await super().checkpoint(run, steps)


async def test_a_checkpoint_per_item_costs_that_item_not_all_items(clock: FakeClock) -> None:
    storage = CountingStorage()
    engine = FluxEngine(storage, clock=clock)
    total = 200
    wf = create_workflow("m").map("m", double, over=lambda ctx: list(range(total)), concurrency=8)
    result = await engine.execute(wf)
    assert result.outputs["m"] == [2 * i for i in range(total)]
    item_writes = [w for w in storage.writes if w and all(r.step.startswith("m[") for r in w)]
    assert len(item_writes) >= total  # at least one checkpoint per item
    assert max(len(w) for w in storage.writes) <= 3  # each writes the visits that changed, not all
    whole = [r for w in storage.writes for r in w if r.step == "m" and r.output is not None]
    assert len(whole) == 1  # the full result list is written once, when the map completes


async def test_a_resumed_map_runs_only_unfinished_items_over_the_recorded_list(
    storage: Storage, clock: FakeClock
) -> None:
    calls: Counter[int] = Counter()
    lists = iter([[10, 11, 12, 13, 14, 15], [99]])  # a second evaluation would give another list
    crash_armed = True
    three_done = asyncio.Event()
    done = 0

    async def item(ctx: StepContext[Any], value: int) -> int:
        nonlocal crash_armed, done
        calls[value] += 1
        if value == 13 and crash_armed:
            await three_done.wait()
            crash_armed = False
            raise Crash()
        done += 1
        if done == 3:
            three_done.set()
        return value

    def workflow() -> Workflow[Any]:
        return create_workflow("m").map("m", item, over=lambda ctx: next(lists), concurrency=2).build()

    first = FluxEngine(storage, clock=clock)
    with pytest.raises(Crash):
        await first.execute(workflow(), run_id="r1")
    stranded = await first.get("r1")
    items = [r for r in stranded.history if r.step != "m"]
    finished = {int(r.step[2:-1]) + 10 for r in items if r.status == "completed"}
    in_flight = {int(r.step[2:-1]) + 10 for r in items if r.status == "running"}
    assert len(finished) >= 3 and 13 in in_flight

    await clock.advance(timedelta(seconds=31))
    second = FluxEngine(storage, clock=clock, workflows=[workflow()])
    result = await second.resume("r1")
    assert result.status == "completed"
    assert result.outputs["m"] == [10, 11, 12, 13, 14, 15]
    # Finished items never ran again; the ones in flight at the crash ran at most once more.
    assert all(calls[value] == 1 for value in finished)
    assert calls[13] == 2
    assert all(calls[value] in (1, 2) for value in in_flight)
    assert all(calls[value] == 1 for value in range(10, 16) if value not in finished | in_flight)
