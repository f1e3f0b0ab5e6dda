"""Resume, retry_step, replay, recover, plan versions and cached actions (issue: durability).

A crash is simulated in-process by a handler raising a BaseException that the engine does not
catch: the run is left ``running`` with its step in flight, exactly as a killed process leaves
it. (Real SIGKILL crashes are in test_crash.py.) A second engine on the same storage plays the
restarted process; FakeClock moves time past the first engine's lease.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypedDict

import attrs
import pytest

from flux import (
    FluxEngine,
    InvalidRunStateError,
    PlanMismatchError,
    RunNotFoundError,
    StepContext,
    UnknownStepError,
    Workflow,
    WorkflowNotRegisteredError,
    create_workflow,
)
from flux.storage import MemoryStorage, SQLiteStorage, Storage
from flux.testing import FakeClock


class Crash(BaseException):
    """Stands for the process dying in the middle of a step."""


@pytest.fixture(params=["memory", "sqlite"])
async def shared_storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    storage: Storage = MemoryStorage() if request.param == "memory" else SQLiteStorage(tmp_path / "flux.db")
    await storage.init()
    yield storage
    await storage.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def engine_on(storage: Storage, clock: FakeClock, *workflows: Workflow[Any]) -> FluxEngine:
    """An engine sharing ``storage`` (stands for a process; storage is opened by the fixture)."""
    return FluxEngine(storage, clock=clock, workflows=workflows)


class Calls:
    """Counts handler calls by step name and can crash one step once."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.crash_at: str | None = None

    def __call__(self, ctx: StepContext[Any]) -> str:
        self.counts[ctx.step] += 1
        if ctx.step == self.crash_at:
            self.crash_at = None
            raise Crash(ctx.step)
        ctx.data[ctx.step] = ctx.attempt
        return f"{ctx.step}-out"


def three_steps(calls: Calls, name: str = "three") -> Workflow[Any]:
    return create_workflow(name).step("a", calls).step("b", calls).commit("c", calls).build()


async def crash_run(engine: FluxEngine, workflow: Workflow[Any], calls: Calls, step: str) -> str:
    calls.crash_at = step
    with pytest.raises(Crash):
        await engine.execute(workflow, run_id="r1")
    return "r1"


async def test_resume_after_a_crash_skips_completed_steps_and_reruns_the_one_in_flight(
    shared_storage: Storage, clock: FakeClock
) -> None:
    calls = Calls()
    wf = three_steps(calls)
    first = engine_on(shared_storage, clock, wf)
    run_id = await crash_run(first, wf, calls, "b")
    stranded = await first.get(run_id)
    assert stranded.status == "running"
    assert [(h.step, h.status) for h in stranded.history] == [("a", "completed"), ("b", "running")]

    await clock.advance(timedelta(seconds=31))  # the first "process" stopped renewing its lease
    second = engine_on(shared_storage, clock, wf)
    result = await second.resume(run_id)

    assert result.status == "completed"
    assert calls.counts == {"a": 1, "b": 2, "c": 1}
    assert result.outputs == {"a": "a-out", "b": "b-out", "c": "c-out"}
    assert result.data == {"a": 1, "b": 1, "c": 1}
    assert [h.step for h in result.history] == ["a", "b", "c"]


async def test_resume_refuses_a_run_another_live_engine_holds(
    shared_storage: Storage, clock: FakeClock
) -> None:
    calls = Calls()
    wf = three_steps(calls)
    first = engine_on(shared_storage, clock, wf)
    run_id = await crash_run(first, wf, calls, "a")
    second = engine_on(shared_storage, clock, wf)
    with pytest.raises(InvalidRunStateError, match="being driven by"):
        await second.resume(run_id)


async def test_recover_resumes_each_stranded_run_once_even_from_two_engines_at_once(
    shared_storage: Storage, clock: FakeClock
) -> None:
    calls = Calls()
    wf = three_steps(calls)
    first = engine_on(shared_storage, clock, wf)
    for run_id in ("x", "y"):
        calls.crash_at = "b"
        with pytest.raises(Crash):
            await first.execute(wf, run_id=run_id)
    await clock.advance(timedelta(seconds=31))
    one, two = engine_on(shared_storage, clock, wf), engine_on(shared_storage, clock, wf)
    results = await asyncio.gather(one.recover(), two.recover())
    recovered = sorted(r.id for batch in results for r in batch)
    assert recovered == ["x", "y"]
    assert calls.counts == {"a": 2, "b": 4, "c": 2}
    assert await one.recover() == []


async def test_recover_with_nothing_stranded_does_nothing(shared_storage: Storage, clock: FakeClock) -> None:
    calls = Calls()
    engine = engine_on(shared_storage, clock, three_steps(calls))
    await engine.execute(three_steps(calls))
    assert await engine.recover() == []
    assert calls.counts == {"a": 1, "b": 1, "c": 1}


async def test_resume_from_step_reruns_a_completed_run_from_there(
    shared_storage: Storage, clock: FakeClock
) -> None:
    calls = Calls()
    wf = three_steps(calls)
    engine = engine_on(shared_storage, clock, wf)
    done = await engine.execute(wf)
    by_name = await engine.resume(done.id, from_step="b")
    by_index = await engine.resume(done.id, from_step=2)
    assert by_name.status == by_index.status == "completed"
    assert calls.counts == {"a": 1, "b": 2, "c": 3}
    assert [h.step for h in by_index.history] == ["a", "b", "c", "b", "c", "c"]
    assert by_index.outputs["a"] == "a-out"


async def test_resume_rejects_unknown_runs_and_steps(shared_storage: Storage, clock: FakeClock) -> None:
    """Bad input: an unknown run id, an unknown step name, an out-of-range step index."""
    calls = Calls()
    wf = three_steps(calls)
    engine = engine_on(shared_storage, clock, wf)
    done = await engine.execute(wf)
    with pytest.raises(RunNotFoundError, match="no run with id 'nope'"):
        await engine.resume("nope")
    with pytest.raises(UnknownStepError, match="has no step 'zzz'; its steps are: a, b, c"):
        await engine.resume(done.id, from_step="zzz")
    with pytest.raises(UnknownStepError, match="out of range"):
        await engine.resume(done.id, from_step=7)
    assert (await engine.get(done.id)).status == "completed"


async def test_resume_of_a_completed_run_without_from_step_changes_nothing(
    shared_storage: Storage, clock: FakeClock
) -> None:
    calls = Calls()
    engine = engine_on(shared_storage, clock, three_steps(calls))
    done = await engine.execute(three_steps(calls))
    again = await engine.resume(done.id)
    assert again.status == "completed"
    assert again.history == (await engine.get(done.id)).history
    assert calls.counts == {"a": 1, "b": 1, "c": 1}


async def test_retry_step_continues_a_failed_run(shared_storage: Storage, clock: FakeClock) -> None:
    broken = {"b": True}

    def b(ctx: StepContext[Any]) -> str:
        if broken["b"]:
            raise ValueError("bad config")
        return "fixed"

    wf = create_workflow("fixable").step("a", lambda ctx: "a").step("b", b).build()
    engine = engine_on(shared_storage, clock, wf)
    failed = await engine.execute(wf)
    assert failed.status == "failed"
    assert failed.error is not None and failed.error.step == "b"
    broken["b"] = False
    fixed = await engine.retry_step(failed.id, "b")
    assert fixed.status == "completed"
    assert fixed.error is None
    assert fixed.outputs == {"a": "a", "b": "fixed"}
    assert [(h.step, h.status) for h in fixed.history] == [
        ("a", "completed"),
        ("b", "failed"),
        ("b", "completed"),
    ]
    with pytest.raises(InvalidRunStateError, match="not failed"):
        await engine.retry_step(fixed.id, "b")


async def test_resume_continues_a_failed_run_at_the_failed_step(
    shared_storage: Storage, clock: FakeClock
) -> None:
    state = {"fail": True}

    def flaky(ctx: StepContext[Any]) -> None:
        if state["fail"]:
            raise ValueError("not yet")

    wf = create_workflow("later").step("a", lambda ctx: 1).step("b", flaky).build()
    engine = engine_on(shared_storage, clock, wf)
    failed = await engine.execute(wf)
    state["fail"] = False
    assert (await engine.resume(failed.id)).status == "completed"


async def test_replay_calls_only_commit_steps_and_reapplies_recorded_outcomes(
    shared_storage: Storage, clock: FakeClock
) -> None:
    calls = Calls()
    wf = three_steps(calls)
    engine = engine_on(shared_storage, clock, wf)
    original = await engine.execute(wf)
    replayed = await engine.replay(original.id)
    assert replayed.id != original.id
    assert replayed.status == "completed"
    assert calls.counts == {"a": 1, "b": 1, "c": 2}
    assert replayed.outputs == original.outputs
    assert replayed.data == original.data
    stored = await engine.get(replayed.id)
    assert stored.data == original.data


async def test_replay_rejects_unfinished_runs(shared_storage: Storage, clock: FakeClock) -> None:
    calls = Calls()
    wf = three_steps(calls)
    engine = engine_on(shared_storage, clock, wf)
    run_id = await crash_run(engine, wf, calls, "b")
    with pytest.raises(InvalidRunStateError, match="only finished runs can be replayed"):
        await engine.replay(run_id)


async def test_a_changed_plan_raises_plan_mismatch_unless_the_old_version_is_registered(
    shared_storage: Storage, clock: FakeClock
) -> None:
    calls = Calls()
    v1 = three_steps(calls, "orders")
    first = engine_on(shared_storage, clock, v1)
    run_id = await crash_run(first, v1, calls, "b")
    await clock.advance(timedelta(seconds=31))

    v2 = create_workflow("orders").step("a", calls).step("renamed", calls).commit("c", calls).build()
    with pytest.raises(PlanMismatchError) as caught:
        await engine_on(shared_storage, clock, v2).resume(run_id)
    assert "step 'b' ran in the run but is not in the plan" in caught.value.differences
    assert run_id in str(caught.value)

    both = engine_on(shared_storage, clock, v2, v1)
    assert (await both.resume(run_id)).status == "completed"


async def test_a_run_of_an_unregistered_workflow_says_how_to_register_it(
    shared_storage: Storage, clock: FakeClock
) -> None:
    calls = Calls()
    wf = three_steps(calls)
    run_id = await crash_run(engine_on(shared_storage, clock, wf), wf, calls, "b")
    await clock.advance(timedelta(seconds=31))
    with pytest.raises(WorkflowNotRegisteredError, match=r"engine.register\(workflow\)"):
        await engine_on(shared_storage, clock).resume(run_id)


async def test_a_finished_action_is_not_called_again_when_its_step_reruns(
    shared_storage: Storage, clock: FakeClock
) -> None:
    charges: list[str] = []

    async def pay(ctx: StepContext[Any]) -> str:
        async def charge() -> str:
            charges.append(ctx.idempotency_key)
            return "receipt-1"

        receipt = await ctx.action("charge", charge)
        if ctx.attempt == 1:
            raise ConnectionError("network blip after charging")
        return receipt

    wf = create_workflow("pay").step("pay", pay, retries=2).build()
    engine = engine_on(shared_storage, clock, wf)
    result = await engine.execute(wf)
    assert result.status == "completed"
    assert result.outputs == {"pay": "receipt-1"}
    assert charges == [f"{result.id}:pay"]
    assert result.history[0].actions == {"charge": "receipt-1"}
    assert (await engine.get(result.id)).history[0].actions == {"charge": "receipt-1"}


async def test_an_action_result_that_is_not_json_fails_the_step(
    shared_storage: Storage, clock: FakeClock
) -> None:
    """Bad input: an action returning a set."""

    async def step(ctx: StepContext[Any]) -> None:
        await ctx.action("bad", lambda: {1, 2})

    engine = engine_on(shared_storage, clock)
    result = await engine.execute(create_workflow("bad-action").step("s", step, retries=0))
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.type == "SerializationError"
    assert "action 'bad'" in result.error.message


class Tier(enum.Enum):
    GOLD = "gold"
    BASIC = "basic"


@dataclasses.dataclass
class DataclassOrder:
    order_id: str
    tier: Tier
    placed: datetime


@attrs.frozen
class AttrsOrder:
    order_id: str
    tier: Tier
    placed: datetime


class DictOrder(TypedDict):
    order_id: str
    tier: Tier
    placed: datetime


PLACED = datetime(2030, 5, 1, 12, 30, tzinfo=UTC)


def typed_inputs() -> Iterator[tuple[type[Any], Any]]:
    yield DataclassOrder, DataclassOrder("o-1", Tier.GOLD, PLACED)
    yield AttrsOrder, AttrsOrder("o-1", Tier.GOLD, PLACED)
    yield DictOrder, DictOrder(order_id="o-1", tier=Tier.GOLD, placed=PLACED)


@pytest.mark.parametrize(("kind", "value"), list(typed_inputs()), ids=["dataclass", "attrs", "typeddict"])
async def test_typed_input_comes_back_typed_after_a_restart(
    shared_storage: Storage, clock: FakeClock, kind: type[Any], value: Any
) -> None:
    seen: list[Any] = []

    def look(ctx: StepContext[Any]) -> None:
        seen.append(ctx.input)
        if len(seen) == 1:
            raise Crash()

    wf = create_workflow("typed").input(kind).step("look", look).build()
    with pytest.raises(Crash):
        await engine_on(shared_storage, clock, wf).execute(wf, value, run_id="t1")
    await clock.advance(timedelta(seconds=31))
    assert (await engine_on(shared_storage, clock, wf).resume("t1")).status == "completed"
    restored = seen[1]
    if kind is DictOrder:
        assert restored == value
    else:
        assert isinstance(restored, kind)
        assert restored == value
    tier = restored["tier"] if kind is DictOrder else restored.tier
    placed = restored["placed"] if kind is DictOrder else restored.placed
    assert tier is Tier.GOLD
    assert placed == PLACED
