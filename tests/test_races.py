"""Races inside one process and across engines, each forced deterministically (events, a
storage gate that stops one call), never by sleeping and hoping."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from storage_wrappers import Gate

from flux import (
    FluxEngine,
    InvalidRunStateError,
    RunStatus,
    StepContext,
    Storage,
    UnknownSignalError,
    create_workflow,
)
from flux.testing import FakeClock


@pytest.fixture
async def engine(storage: Storage, clock: FakeClock) -> AsyncIterator[FluxEngine]:
    async with FluxEngine(storage=storage, clock=clock) as engine:
        yield engine


def blocked_chain(name: str, calls: list[str], gate: asyncio.Event, started: asyncio.Event) -> Any:
    """``a`` (counted), ``b`` (counted; waits for ``gate`` after setting ``started``), ``c``."""

    def a(ctx: StepContext[Any]) -> str:
        calls.append("a")
        return "a"

    async def b(ctx: StepContext[Any]) -> str:
        calls.append("b")
        started.set()
        await gate.wait()
        return "b"

    return create_workflow(name).step("a", a).step("b", b).step("c", lambda ctx: "c")


# --- item 4: creating a run is insert-only ----------------------------------------------------


async def test_start_with_the_id_of_a_run_being_driven_is_refused(engine: FluxEngine) -> None:
    """Race: ``start(run_id="x")`` while ``execute(run_id="x")`` is inside step ``b``. It used
    to upsert over the driven run (reset to pending, step records deleted) so ``a`` ran twice.
    Now it raises InvalidRunStateError and the driven run ends with each step run once."""
    calls: list[str] = []
    gate, started = asyncio.Event(), asyncio.Event()
    flow = blocked_chain("once", calls, gate, started)
    driving = asyncio.create_task(engine.execute(flow, run_id="x"))
    await started.wait()
    with pytest.raises(InvalidRunStateError, match="already used"):
        await engine.start(flow, run_id="x")
    gate.set()
    result = await driving
    assert result.status == RunStatus.COMPLETED
    assert calls == ["a", "b"]
    assert [r.step for r in result.history] == ["a", "b", "c"]


async def test_two_starts_of_one_id_interleaved_store_one_run(storage: Storage, clock: FakeClock) -> None:
    """Race: the first ``start(run_id="x")`` is stopped just before it writes; the second
    completes; then the first goes on. It used to pass its existence check and then overwrite
    the second's run. Now the first raises InvalidRunStateError and the second's run stays."""
    gate = Gate(storage, "create", nth=1)
    async with FluxEngine(storage=gate.storage, clock=clock) as engine:
        flow = create_workflow("twice").step("a", lambda ctx: ctx.input["n"])
        first = asyncio.create_task(engine.start(flow, {"n": 1}, run_id="x"))
        await gate.reached.wait()
        assert await engine.start(flow, {"n": 2}, run_id="x") == "x"
        gate.open()
        with pytest.raises(InvalidRunStateError, match="already used"):
            await first
        stored = await engine.get("x")
        assert (stored.status, stored.input) == (RunStatus.PENDING, {"n": 2})


# --- item 5: creation and key reservation are one storage operation ---------------------------


@pytest.mark.parametrize("call", ["start", "execute"])
async def test_an_idempotent_start_is_one_storage_write(
    storage: Storage, clock: FakeClock, call: str
) -> None:
    """Crash window: ``start``/``execute`` with an idempotency key used to write a tentative
    run, bind the key, then delete the loser: three transactions, and a crash between them
    left two runs for one key or a pending run no worker takes. Now the run and its key are
    written by one ``create`` call, before which nothing is stored."""
    gate = Gate(storage, "none")
    async with FluxEngine(storage=gate.storage, clock=clock) as engine:
        flow = create_workflow("pay").step("charge", lambda ctx: "charged")
        gate.calls.clear()
        if call == "start":
            await engine.start(flow, idempotency_key="order-1")
        else:
            await engine.execute(flow, idempotency_key="order-1")
        writes = [name for name in gate.calls if name in ("create", "save", "delete")]
        assert writes == ["create"]
        assert gate.calls.index("create") == 0  # nothing was written before it


async def test_a_crash_at_the_idempotent_create_leaves_nothing_behind(
    storage: Storage, clock: FakeClock
) -> None:
    """Crash: the process dies while the idempotent create is in flight (the create call never
    returns). Nothing was stored and the key is free: a retry with the same key makes one run."""
    gate = Gate(storage, "create", nth=1)
    async with FluxEngine(storage=gate.storage, clock=clock) as engine:
        flow = create_workflow("pay").step("charge", lambda ctx: "charged")
        doomed = asyncio.create_task(engine.start(flow, idempotency_key="order-1"))
        await gate.reached.wait()
        doomed.cancel()  # stands for the crash: the write never happens
        with pytest.raises(asyncio.CancelledError):
            await doomed
        assert await storage.list() == []
        run_id = await engine.start(flow, idempotency_key="order-1")
        assert [run.id for run in await storage.list()] == [run_id]


# --- item 12: duplicate signals ---------------------------------------------------------------


async def test_concurrent_duplicate_signals_store_one(storage: Storage, clock: FakeClock) -> None:
    """Race: two ``signal(run, "approve")`` calls for one wait, the first stopped just before
    its write until the second has passed its duplicate check. Both used to be stored (one
    never consumed). Now one is stored and the other raises UnknownSignalError."""
    gate = Gate(storage, "add_signal", nth=1)
    async with FluxEngine(storage=gate.storage, clock=clock) as engine:
        flow = create_workflow("approval").wait_for_signal("approve").step("done", lambda ctx: 1)
        run = await engine.execute(flow)
        first = asyncio.create_task(engine.signal(run.id, "approve", "first"))
        await gate.reached.wait()
        second = asyncio.create_task(engine.signal(run.id, "approve", "second"))
        await gate.arrival(2).wait()  # the second reached storage: it passed the engine's checks
        gate.open()
        outcomes = await asyncio.gather(first, second, return_exceptions=True)
        assert sum(isinstance(o, UnknownSignalError) for o in outcomes) == 1
        assert len(await storage.list_signals(run.id)) == 1


# --- item 1: one engine never drives one run twice ----------------------------------------------


async def test_resume_during_execute_is_refused(engine: FluxEngine) -> None:
    """Race: ``resume(id)`` while ``execute`` of that run is inside step ``b``. ``claim`` let
    the current owner claim again, so every remaining step ran twice. Now InvalidRunStateError
    (decision: refuse, never join), and each step runs once."""
    calls: list[str] = []
    gate, started = asyncio.Event(), asyncio.Event()
    flow = blocked_chain("twice", calls, gate, started)
    driving = asyncio.create_task(engine.execute(flow, run_id="x"))
    await started.wait()
    with pytest.raises(InvalidRunStateError, match="being driven by this engine already"):
        await engine.resume("x")
    gate.set()
    result = await driving
    assert result.status == RunStatus.COMPLETED
    assert calls == ["a", "b"]
    assert [r.step for r in result.history] == ["a", "b", "c"]


async def test_two_concurrent_resumes_drive_once(storage: Storage, clock: FakeClock) -> None:
    """Race: two ``resume(id)`` calls of one failed-then-fixed run, the first stopped inside its
    claim until the second has run. Both used to claim (same owner) and run the remaining
    steps twice. Now the second is refused and the steps run once."""
    calls: list[str] = []
    broken = True

    def b(ctx: StepContext[Any]) -> str:
        calls.append("b")
        if broken:
            raise ValueError("not yet")
        return "b"

    flow = create_workflow("fix").step("a", lambda ctx: "a").step("b", b).step("c", lambda ctx: "c")
    gate = Gate(storage, "claim", nth=1)
    async with FluxEngine(storage=gate.storage, clock=clock) as engine:
        failed = await engine.execute(flow, run_id="x")
        assert failed.status == RunStatus.FAILED
        broken = False
        first = asyncio.create_task(engine.resume("x"))
        await gate.reached.wait()
        with pytest.raises(InvalidRunStateError, match="being driven by this engine already"):
            await engine.resume("x")
        gate.open()
        result = await first
    assert result.status == RunStatus.COMPLETED
    assert calls == ["b", "b"]  # the failed attempt, then one resumed attempt


async def test_a_worker_leaves_a_run_this_engine_is_resuming(storage: Storage, clock: FakeClock) -> None:
    """Race: a run waits for a signal; ``resume`` of it is stopped inside its claim; the
    signal arrives (the run becomes due) while this engine's worker runs. The worker used to
    claim it too and both drove the rest. Now the worker leaves it; ``publish`` runs once."""
    calls: list[str] = []
    flow = (
        create_workflow("approval")
        .wait_for_signal("approve")
        .step("publish", lambda ctx: calls.append("publish"))
    )
    gate = Gate(storage, "claim", nth=1)
    async with FluxEngine(storage=gate.storage, clock=clock) as engine:
        waiting = await engine.execute(flow)
        resuming = asyncio.create_task(engine.resume(waiting.id))
        await gate.reached.wait()
        async with engine.worker():
            await engine.signal(waiting.id, "approve", "ok")
            gate.open()
            result = await resuming
            if result.status != RunStatus.COMPLETED:  # it resumed before the signal landed
                result = await engine.wait_result(waiting.id, timeout=10)
    assert result.status == RunStatus.COMPLETED
    assert calls == ["publish"]
