"""The engine's core behaviour through the public API: steps, context, results, timeouts, conditions."""

from __future__ import annotations

import asyncio
import copy
import enum
import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict

import attrs
import pytest

from flux import (
    FluxEngine,
    InvalidRunStateError,
    MemoryStorage,
    RunResult,
    RunStatus,
    StepContext,
    StepStatus,
    create_workflow,
)
from flux.testing import EventRecorder, FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def engine(clock: FakeClock) -> Any:
    async with FluxEngine(clock=clock) as engine:
        yield engine


async def assert_stored_matches(engine: FluxEngine, result: RunResult) -> None:
    """What execute returned is what storage holds."""
    assert await engine.get(result.id) == result


# --- steps, data, outputs -----------------------------------------------------------------


async def test_steps_run_in_order_sharing_data_and_outputs(engine: FluxEngine) -> None:
    seen: list[tuple[str, dict[str, Any], dict[str, Any]]] = []

    def fetch(ctx: StepContext[Any]) -> dict[str, Any]:
        seen.append((ctx.step, dict(ctx.data), dict(ctx.outputs)))
        ctx.data["order"] = {"id": ctx.input["id"], "vip": True}
        return {"items": 3}

    async def price(ctx: StepContext[Any]) -> float:
        seen.append((ctx.step, dict(ctx.data), dict(ctx.outputs)))
        ctx.data["total"] = 9.5 * ctx.outputs["fetch"]["items"]
        return 28.5

    def log_only(ctx: StepContext[Any]) -> None:
        seen.append((ctx.step, dict(ctx.data), dict(ctx.outputs)))

    wf = create_workflow("orders").step("fetch", fetch).step("price", price).step("log", log_only)
    result = await engine.execute(wf, {"id": "A1"})

    assert result.status == "completed"
    assert result.status is RunStatus.COMPLETED
    assert result.outputs == {"fetch": {"items": 3}, "price": 28.5}  # None is no output
    assert result.data == {"order": {"id": "A1", "vip": True}, "total": 28.5}
    assert result.error is None
    assert result.workflow == "orders"
    assert seen == [
        ("fetch", {}, {}),
        ("price", {"order": {"id": "A1", "vip": True}}, {"fetch": {"items": 3}}),
        ("log", {"order": {"id": "A1", "vip": True}, "total": 28.5}, {"fetch": {"items": 3}, "price": 28.5}),
    ]
    assert [(h.step, h.status, h.attempts) for h in result.history] == [
        ("fetch", "completed", 1),
        ("price", "completed", 1),
        ("log", "completed", 1),
    ]
    await assert_stored_matches(engine, result)


async def test_outputs_are_read_only_for_handlers(engine: FluxEngine) -> None:
    def first(ctx: StepContext[Any]) -> int:
        return 1

    def tamper(ctx: StepContext[Any]) -> None:
        ctx.outputs["first"] = 2  # type: ignore[index]

    result = await engine.execute(create_workflow("w").step("first", first).step("tamper", tamper))
    assert result.status == "failed"
    assert result.error is not None and result.error.type == "TypeError"
    assert result.outputs == {"first": 1}


async def test_execute_takes_a_builder_or_a_workflow(engine: FluxEngine) -> None:
    builder = create_workflow("w").step("s", lambda ctx: "x")
    from_builder = await engine.execute(builder)
    from_plan = await engine.execute(builder.build())
    assert from_builder.outputs == from_plan.outputs == {"s": "x"}
    assert from_builder.id != from_plan.id
    with pytest.raises(TypeError, match="expected a Workflow or a builder"):
        await engine.execute("w")  # type: ignore[arg-type]


async def test_context_fields(engine: FluxEngine, caplog: pytest.LogCaptureFixture) -> None:
    contexts: list[StepContext[Any]] = []

    async def look(ctx: StepContext[Any]) -> None:
        contexts.append(ctx)
        ctx.log.info("looking at %s", ctx.input["id"])

    caplog.set_level(logging.INFO, logger="flux.step")
    result = await engine.execute(create_workflow("ctx").step("look", look), {"id": "A1"}, run_id="run-1")
    (ctx,) = contexts
    assert result.id == "run-1"
    assert (ctx.run_id, ctx.step, ctx.attempt, ctx.input) == ("run-1", "look", 1, {"id": "A1"})
    assert ctx.idempotency_key == "run-1:look"
    (record,) = [r for r in caplog.records if r.name == "flux.step"]
    assert record.getMessage() == "looking at A1"
    assert (record.run_id, record.step, record.attempt, record.workflow) == (  # type: ignore[attr-defined]
        "run-1",
        "look",
        1,
        "ctx",
    )


async def test_sync_handlers_run_off_the_loop_and_async_ones_on_it(engine: FluxEngine) -> None:
    loop_thread = threading.current_thread()
    threads: dict[str, threading.Thread] = {}

    def sync_step(ctx: StepContext[Any]) -> None:
        threads["sync"] = threading.current_thread()

    async def async_step(ctx: StepContext[Any]) -> None:
        threads["async"] = threading.current_thread()

    wf = create_workflow("threads").step("sync", sync_step).step("async", async_step)
    assert (await engine.execute(wf)).status == "completed"
    assert threads["async"] is loop_thread
    assert threads["sync"] is not loop_thread


async def test_result_is_frozen_and_timed_by_the_clock(engine: FluxEngine, clock: FakeClock) -> None:
    async def slow(ctx: StepContext[Any]) -> None:
        await clock.sleep(2)

    start = clock.now()
    result = await engine.execute(create_workflow("timed").step("quick", lambda ctx: 1).step("slow", slow))
    assert result.duration == 2.0
    quick, slow_record = result.history
    assert quick.started_at == quick.finished_at == start
    assert slow_record.started_at == start
    assert slow_record.finished_at == start + timedelta(seconds=2)
    assert slow_record.duration == 2.0
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        result.status = RunStatus.FAILED  # type: ignore[misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        result.history[0].status = StepStatus.FAILED  # type: ignore[misc]


async def test_failure_is_a_result_not_an_exception(engine: FluxEngine) -> None:
    def broken(ctx: StepContext[Any]) -> None:
        raise KeyError("missing")

    after: list[StepContext[Any]] = []
    wf = create_workflow("w").step("ok", lambda ctx: 1).step("broken", broken).step("after", after.append)
    result = await engine.execute(wf)
    assert result.status == "failed"
    assert after == []  # steps after the failure do not run
    assert result.error is not None
    assert (result.error.step, result.error.type, result.error.message) == ("broken", "KeyError", "'missing'")
    assert 'raise KeyError("missing")' in result.error.traceback
    assert [(h.step, h.status) for h in result.history] == [("ok", "completed"), ("broken", "failed")]
    assert result.history[1].error == result.error
    assert result.outputs == {"ok": 1}
    await assert_stored_matches(engine, result)


async def test_run_ids(engine: FluxEngine) -> None:
    first = await engine.execute(create_workflow("w").step("s", lambda ctx: 1), run_id="mine")
    with pytest.raises(InvalidRunStateError, match="already used"):
        await engine.execute(create_workflow("w").step("s", lambda ctx: 2), run_id="mine")
    assert (await engine.get("mine")).outputs == {"s": 1}
    generated = await engine.execute(create_workflow("w").step("s", lambda ctx: 3))
    assert generated.id not in ("mine", "")
    assert first.id == "mine"


async def test_get_and_list(clock: FakeClock) -> None:
    storage = MemoryStorage()
    ok = create_workflow("ok").step("s", lambda ctx: ctx.input)
    bad = create_workflow("bad").step("s", lambda ctx: 1 / 0)
    async with FluxEngine(storage, clock=clock) as engine:
        ids = []
        for n in range(3):
            ids.append((await engine.execute(ok, n)).id)
            await clock.advance(1)
        failed = await engine.execute(bad)

        assert [r.id for r in await engine.list()] == [failed.id, *reversed(ids)]  # newest first
        assert [r.id for r in await engine.list(name="ok")] == list(reversed(ids))
        assert [r.id for r in await engine.list(status="failed")] == [failed.id]
        assert len(await engine.list(status=["failed", "completed"])) == 4
        assert [r.id for r in await engine.list(name="ok", limit=2)] == [ids[2], ids[1]]
        assert [r.id for r in await engine.list(name="ok", limit=2, offset=2)] == [ids[0]]
        assert await engine.list(name="nope") == []
        assert (await engine.get(ids[1])).outputs == {"s": 1}
        with pytest.raises(ValueError, match="unknown run status"):
            await engine.list(status="done")
    async with FluxEngine(storage, clock=clock) as again:  # another engine on the same storage
        assert len(await again.list()) == 4


async def test_engine_rejects_bad_defaults() -> None:
    with pytest.raises(ValueError, match="default_retries"):
        FluxEngine(default_retries=-1)
    with pytest.raises(ValueError, match="default_timeout"):
        FluxEngine(default_timeout=0)


# --- timeouts -----------------------------------------------------------------------------


async def test_async_attempt_is_cancelled_at_its_deadline(engine: FluxEngine, clock: FakeClock) -> None:
    entered = asyncio.Event()
    cancelled = asyncio.Event()

    async def hang(ctx: StepContext[Any]) -> str:
        entered.set()
        try:
            await asyncio.Event().wait()  # never set: only the deadline ends this
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    wf = create_workflow("slow").step("hang", hang, timeout=10, retries=0)
    task = asyncio.create_task(engine.execute(wf))
    await entered.wait()
    await clock.wait_for_timers()
    await clock.advance(9.9)
    assert not task.done() and not cancelled.is_set()
    await clock.advance(0.1)
    result = await task

    assert cancelled.is_set()
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.type == "StepTimeoutError"
    assert "timed out after 10s" in result.error.message
    assert "raise its timeout=" in result.error.message
    assert result.history[0].duration == 10.0
    assert result.outputs == {}


async def test_sync_attempt_fails_at_its_deadline_and_its_thread_is_abandoned(clock: FakeClock) -> None:
    entered = threading.Event()
    release = threading.Event()
    finished = threading.Event()
    threads: list[threading.Thread] = []

    def block(ctx: StepContext[Any]) -> str:
        threads.append(threading.current_thread())
        entered.set()
        release.wait(timeout=30)  # bounded, in case the test fails before releasing it
        finished.set()
        return "too late"

    wf = create_workflow("slow-sync").step("block", block, timeout=5, retries=0).step("next", lambda ctx: 1)
    loop = asyncio.get_running_loop()
    try:
        async with FluxEngine(clock=clock) as engine:
            task = asyncio.create_task(engine.execute(wf))
            await loop.run_in_executor(None, entered.wait, 30)
            await clock.wait_for_timers()
            await clock.advance(5)
            result = await task
            assert not finished.is_set()  # failed at the deadline while its thread still runs
            release.set()
            await loop.run_in_executor(None, finished.wait, 30)
            assert (await engine.get(result.id)).outputs == {}  # the late return value is dropped
    finally:
        release.set()
    threads[0].join(timeout=30)  # the engine let go of its threads on close
    assert not threads[0].is_alive()

    assert result.status == "failed"
    assert result.error is not None
    assert result.error.type == "StepTimeoutError"
    assert "abandoned" in result.error.message
    assert [h.step for h in result.history] == ["block"]
    assert result.outputs == {}


async def test_default_timeout_applies_and_timeouts_are_retried(clock: FakeClock) -> None:
    recorder = EventRecorder()
    attempts: list[int] = []

    async def slow_first(ctx: StepContext[Any]) -> str:
        attempts.append(ctx.attempt)
        if ctx.attempt == 1:
            await asyncio.Event().wait()
        return "second time lucky"

    async with FluxEngine(clock=clock, default_timeout=3, on={"*": recorder}) as engine:
        task = asyncio.create_task(engine.execute(create_workflow("t").step("s", slow_first)))
        await clock.wait_for_timers()
        await clock.advance(3)
        result = await task
    assert result.status == "completed"
    assert result.outputs == {"s": "second time lucky"}
    assert attempts == [1, 2]
    (retry,) = recorder.of("step_retry")
    assert retry.error.type == "StepTimeoutError"
    assert "after 3s" in retry.error.message


async def test_a_fast_attempt_is_not_disturbed_by_its_deadline(engine: FluxEngine, clock: FakeClock) -> None:
    result = await engine.execute(create_workflow("fast").step("s", lambda ctx: "ok", timeout=0.001))
    await clock.advance(60)
    assert result.status == "completed"
    assert (await engine.get(result.id)).status == "completed"


# --- conditions ---------------------------------------------------------------------------


async def test_when_false_skips_the_step_and_records_the_decision(engine: FluxEngine) -> None:
    recorder = EventRecorder()
    engine.on("*", recorder)
    called: list[str] = []

    def mark(ctx: StepContext[Any]) -> str:
        called.append(ctx.step)
        return ctx.step

    async def is_vip(ctx: StepContext[Any]) -> bool:
        return bool(ctx.data["vip"])

    wf = (
        create_workflow("cond")
        .step("load", lambda ctx: ctx.data.update(vip=False))
        .step("vip-gift", mark, when=is_vip)
        .step("regular", mark, when=lambda ctx: not ctx.data["vip"])
        .step("always", mark)
    )
    result = await engine.execute(wf)
    assert result.status == "completed"
    assert called == ["regular", "always"]
    assert result.outputs == {"regular": "regular", "always": "always"}
    assert [(h.step, h.status, h.condition, h.attempts) for h in result.history] == [
        ("load", "completed", None, 1),
        ("vip-gift", "skipped", False, 0),
        ("regular", "completed", True, 1),
        ("always", "completed", None, 1),
    ]
    (skip,) = recorder.of("step_skip")
    assert skip.step == "vip-gift"
    step_events = [(e.name, getattr(e, "step", None)) for e in recorder.events]
    assert step_events[1:-1] == [
        ("step_start", "load"),
        ("step_complete", "load"),
        ("step_skip", "vip-gift"),
        ("step_start", "regular"),
        ("step_complete", "regular"),
        ("step_start", "always"),
        ("step_complete", "always"),
    ]
    await assert_stored_matches(engine, result)


async def test_when_is_evaluated_once_per_visit_even_with_retries(engine: FluxEngine) -> None:
    evaluations: list[int] = []

    def flaky(ctx: StepContext[Any]) -> int:
        if ctx.attempt < 3:
            raise ConnectionError("again")
        return ctx.attempt

    def once(ctx: StepContext[Any]) -> bool:
        evaluations.append(ctx.attempt)
        return True

    result = await engine.execute(create_workflow("w").step("s", flaky, when=once, retries=3))
    assert result.outputs == {"s": 3}
    assert len(evaluations) == 1
    assert result.history[0].condition is True
    assert result.history[0].attempts == 3


async def test_a_failing_condition_fails_the_step(engine: FluxEngine) -> None:
    called: list[int] = []

    def broken(ctx: StepContext[Any]) -> bool:
        raise RuntimeError("cannot decide")

    result = await engine.execute(create_workflow("w").step("s", lambda ctx: called.append(1), when=broken))
    assert result.status == "failed"
    assert called == []
    assert result.error is not None
    assert (result.error.step, result.error.type) == ("s", "RuntimeError")


async def test_a_failed_attempt_leaves_no_data_behind(engine: FluxEngine) -> None:
    """Data written by an attempt that failed is dropped: the next attempt, later steps and
    storage see the data as it was before the attempt."""
    seen: list[dict[str, Any]] = []

    def half_done(ctx: StepContext[Any]) -> None:
        seen.append(copy.deepcopy(dict(ctx.data)))
        if ctx.attempt == 1:
            ctx.data["half"] = True
            ctx.data["base"].append("first try")
            del ctx.data["gone"]
            raise ConnectionError("dropped")
        ctx.data["done"] = ctx.attempt

    wf = (
        create_workflow("w")
        .step("init", lambda ctx: ctx.data.update(base=[], gone=1))
        .step("work", half_done, retries=1)
    )
    result = await engine.execute(wf)
    assert seen == [{"base": [], "gone": 1}, {"base": [], "gone": 1}]
    assert result.data == {"base": [], "gone": 1, "done": 2}
    await assert_stored_matches(engine, result)

    def always_fails(ctx: StepContext[Any]) -> None:
        ctx.data["partial"] = "value"
        raise ValueError("no")

    failed = await engine.execute(create_workflow("f").step("init", lambda ctx: 0).step("s", always_fails))
    assert failed.data == {}
    await assert_stored_matches(engine, failed)


async def test_history_records_are_snapshots(engine: FluxEngine) -> None:
    """A later step changing a list in place does not rewrite an earlier step's record."""
    shared: list[int] = []

    def start(ctx: StepContext[Any]) -> list[int]:
        ctx.data["items"] = [1]
        return shared

    def grow(ctx: StepContext[Any]) -> None:
        ctx.data["items"].append(2)
        shared.append(99)

    result = await engine.execute(create_workflow("w").step("start", start).step("grow", grow))
    assert result.data == {"items": [1, 2]}
    assert result.outputs == {"start": []}
    assert result.history[0].data_set == {"items": [1]}
    assert result.history[1].data_set == {"items": [1, 2]}
    await assert_stored_matches(engine, result)


# --- typed input ----------------------------------------------------------------------------


class Tier(enum.Enum):
    BASIC = "basic"
    GOLD = "gold"


@dataclass
class OrderIn:
    order_id: str
    tier: Tier
    placed_at: datetime
    amount: float = 0.0
    tags: list[str] = field(default_factory=list)


@attrs.frozen
class CustomerIn:
    name: str
    tier: Tier
    since: datetime


class TicketIn(TypedDict):
    code: str
    tier: Tier
    at: datetime


PLACED = datetime(2030, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
TYPED_CASES: list[tuple[type[Any], Any, dict[str, Any]]] = [
    (
        OrderIn,
        OrderIn(order_id="A1", tier=Tier.GOLD, placed_at=PLACED, amount=9.5, tags=["vip"]),
        {
            "order_id": "A1",
            "tier": "gold",
            "placed_at": "2030-05-06T07:08:09.123456+00:00",
            "amount": 9.5,
            "tags": ["vip"],
        },
    ),
    (
        CustomerIn,
        CustomerIn(name="Ada", tier=Tier.BASIC, since=PLACED),
        {"name": "Ada", "tier": "basic", "since": "2030-05-06T07:08:09.123456+00:00"},
    ),
    (
        TicketIn,
        TicketIn(code="T1", tier=Tier.GOLD, at=PLACED),
        {"code": "T1", "tier": "gold", "at": "2030-05-06T07:08:09.123456+00:00"},
    ),
]


@pytest.mark.parametrize(("kind", "value", "stored"), TYPED_CASES, ids=lambda c: getattr(c, "__name__", ""))
async def test_typed_input_round_trips_through_storage(
    engine: FluxEngine, kind: type[Any], value: Any, stored: dict[str, Any]
) -> None:
    """The handler gets the declared type (enums and datetimes included), storage keeps JSON,
    and a resumed run rebuilds an equal typed input from storage."""
    seen: list[Any] = []

    def look(ctx: StepContext[Any]) -> None:
        seen.append(ctx.input)

    wf = create_workflow(f"typed-{kind.__name__}").input(kind).step("look", look).step("again", look)
    from_instance = await engine.execute(wf, value)
    from_dict = await engine.execute(wf, stored)
    resumed = await engine.resume(from_instance.id, from_step="again")

    assert from_instance.status == from_dict.status == resumed.status == "completed"
    assert from_instance.input == from_dict.input == stored
    assert (await engine.get(from_instance.id)).input == stored
    assert len(seen) == 5
    for got in seen:
        assert got == value
        if kind is not TicketIn:
            assert type(got) is kind
        fields = got if isinstance(got, dict) else attrs.asdict(got) if attrs.has(kind) else vars(got)
        assert any(isinstance(v, Tier) for v in fields.values())
        assert any(isinstance(v, datetime) and v.tzinfo is not None for v in fields.values())
    assert seen[-1] is not seen[0]  # rebuilt from storage, not kept in memory
