"""The worker in one process: what it claims, backpressure, leases, shutdown; start/wait_result."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import attrs
import pytest

from flux import (
    FluxEngine,
    MemoryStorage,
    RunNotFoundError,
    RunRecord,
    RunStatus,
    StepContext,
    Storage,
    Worker,
    create_workflow,
)
from flux.testing import EventRecorder, FakeClock

StorageFactory = Callable[[], Storage]


class Gate:
    """An async step that counts how many copies of it run at once, and waits to be let through."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.current = 0
        self.peak = 0
        self.calls = 0
        self.changed = asyncio.Event()

    async def __call__(self, ctx: StepContext[Any]) -> int:
        self.calls += 1
        self.current += 1
        self.peak = max(self.peak, self.current)
        self.changed.set()
        try:
            await self.open.wait()
        finally:
            self.current -= 1
        return int(ctx.input["n"])

    async def until(self, running: int) -> None:
        while self.current < running:
            self.changed.clear()
            await self.changed.wait()


# --- construction and the two ways to run -------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"concurrency": 0}, "concurrency must be an int >= 1"),
        ({"grace_period": -1}, "grace_period must be a non-negative"),
    ],
)
async def test_worker_options_are_checked(engine: FluxEngine, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Worker(engine, **options)


async def test_async_with_engine_worker_drives_started_runs(engine: FluxEngine) -> None:
    flow = create_workflow("double").step("double", lambda ctx: ctx.input["n"] * 2)
    run_ids = [await engine.start(flow, {"n": n}) for n in range(20)]
    assert {r.status for r in await engine.list()} == {RunStatus.PENDING}

    async with engine.worker(concurrency=4) as worker:
        results = [await engine.wait_result(run_id, timeout=10) for run_id in run_ids]

    assert [r.outputs["double"] for r in results] == [n * 2 for n in range(20)]
    assert worker.completed == 20
    assert worker.in_flight == 0


async def test_worker_run_returns_after_stop(engine: FluxEngine) -> None:
    flow = create_workflow("one").step("one", lambda ctx: 1)
    worker = Worker(engine, concurrency=2)
    running = asyncio.create_task(worker.run())

    result = await engine.wait_result(await engine.start(flow), timeout=10)
    worker.stop()
    await asyncio.wait_for(running, timeout=10)

    assert result.status == RunStatus.COMPLETED
    assert running.done() and running.exception() is None


async def test_a_run_started_before_the_worker_is_picked_up(engine: FluxEngine) -> None:
    run_id = await engine.start(create_workflow("early").step("early", lambda ctx: "ok"))
    async with engine.worker():
        assert (await engine.wait_result(run_id, timeout=10)).outputs == {"early": "ok"}


# --- backpressure -------------------------------------------------------------------------


async def test_never_more_than_concurrency_runs_in_flight(engine: FluxEngine) -> None:
    gate = Gate()
    flow = create_workflow("gated").step("gate", gate)
    run_ids = [await engine.start(flow, {"n": n}) for n in range(12)]

    async with engine.worker(concurrency=3) as worker:
        await gate.until(3)
        for _ in range(20):  # give the worker every chance to take a fourth run
            engine.notify()
            await asyncio.sleep(0)
        held = (gate.current, worker.in_flight, len(await engine.list(status="pending")))
        gate.open.set()
        results = [await engine.wait_result(run_id, timeout=10) for run_id in run_ids]

    assert held == (3, 3, 9)
    assert gate.peak == 3
    assert gate.calls == 12
    assert [r.outputs["gate"] for r in results] == list(range(12))


# --- what a worker claims -----------------------------------------------------------------


async def test_a_worker_takes_over_a_run_whose_lease_expired(
    reopen: StorageFactory, clock: FakeClock
) -> None:
    calls: list[str] = []
    crashed = asyncio.Event()

    def pay(ctx: StepContext[Any]) -> str:
        calls.append("pay")
        return "paid"

    async def ship(ctx: StepContext[Any]) -> str:
        calls.append(f"ship#{ctx.attempt}")
        if calls.count("ship#1") == 1:
            crashed.set()
            await asyncio.Event().wait()  # hangs until its process "dies"
        return "shipped"

    flow = create_workflow("order").step("pay", pay).step("ship", ship)
    async with FluxEngine(storage=reopen(), clock=clock, lease=30) as first:
        dying = asyncio.create_task(first.execute(flow))
        await crashed.wait()
        dying.cancel()  # the process is gone: the run stays "running" under its lease
        with pytest.raises(asyncio.CancelledError):
            await dying
        [stranded] = await first.list(status="running")

    async with FluxEngine(storage=reopen(), clock=clock, workflows=[flow]) as second, second.worker():
        await clock.advance(31)
        result = await second.wait_result(stranded.id, timeout=10)

    assert result.status == RunStatus.COMPLETED
    assert result.outputs == {"pay": "paid", "ship": "shipped"}
    assert calls == ["pay", "ship#1", "ship#1"]  # the completed step is not run again


async def test_a_run_whose_lease_is_alive_is_not_taken(reopen: StorageFactory, clock: FakeClock) -> None:
    gate = Gate()
    flow = create_workflow("held").step("gate", gate)
    async with (
        FluxEngine(storage=reopen(), clock=clock, lease=30) as owner,
        FluxEngine(storage=reopen(), clock=clock, workflows=[flow]) as other,
    ):
        driving = asyncio.create_task(owner.execute(flow, {"n": 1}))
        await gate.until(1)
        async with other.worker() as worker:
            await clock.advance(10)
            for _ in range(20):
                other.notify()
                await asyncio.sleep(0)
            taken = worker.in_flight
        gate.open.set()
        result = await driving

    assert taken == 0
    assert gate.calls == 1
    assert result.status == RunStatus.COMPLETED


class RenewCounter(MemoryStorage):
    """MemoryStorage that tells when leases are renewed (heartbeats)."""

    def __init__(self) -> None:
        super().__init__()
        self.renewals: list[int] = []
        self.renewed = asyncio.Event()

    async def renew(self, owner: str, lease_expires_at: datetime, run_ids: Sequence[str]) -> int:
        count = await super().renew(owner, lease_expires_at, run_ids)
        self.renewals.append(count)
        self.renewed.set()
        return count


async def test_heartbeats_keep_the_lease_of_a_step_longer_than_the_lease() -> None:
    storage = RenewCounter()
    gate = Gate()
    flow = create_workflow("long-step").step("gate", gate, timeout=60)
    # Real time: a heartbeat renews every lease/3 seconds of wall time. A rival worker polls
    # all along and would take the run over the moment its lease expired.
    async with (
        FluxEngine(storage=storage, lease=0.15) as engine,
        FluxEngine(storage=storage, lease=0.15, poll_interval=0.01, workflows=[flow]) as rival,
        rival.worker() as rival_worker,
    ):
        driving = asyncio.create_task(engine.execute(flow, {"n": 1}))
        await gate.until(1)
        [run] = await storage.list()
        first_lease = run.lease_expires_at
        async with asyncio.timeout(10):
            while len(storage.renewals) < 4:  # > one lease of wall time has passed
                storage.renewed.clear()
                await storage.renewed.wait()
        [run] = await storage.list()
        gate.open.set()
        result = await driving

    assert first_lease is not None and run.lease_expires_at is not None
    assert run.lease_expires_at > first_lease + timedelta(seconds=0.15)
    assert result.status == RunStatus.COMPLETED
    assert gate.calls == 1
    assert rival_worker.completed == 0


async def test_runs_of_unknown_workflows_are_left_to_other_workers(
    reopen: StorageFactory, clock: FakeClock
) -> None:
    known = create_workflow("known").step("k", lambda ctx: "k")
    unknown = create_workflow("unknown").step("u", lambda ctx: "u")
    async with FluxEngine(storage=reopen(), clock=clock) as producer:
        foreign = await producer.start(unknown)
        mine = await producer.start(known)

    async with FluxEngine(storage=reopen(), clock=clock, workflows=[known]) as engine:
        async with engine.worker():
            result = await engine.wait_result(mine, timeout=10)
        assert result.status == RunStatus.COMPLETED
        assert (await engine.get(foreign)).status == RunStatus.PENDING


async def test_two_engines_sharing_a_store_drive_each_run_once(
    reopen: StorageFactory, clock: FakeClock
) -> None:
    counts: dict[str, int] = {}

    async def work(ctx: StepContext[Any]) -> str:
        key = f"{ctx.run_id}/{ctx.step}"
        counts[key] = counts.get(key, 0) + 1
        await asyncio.sleep(0)
        return key

    flow = create_workflow("shared").step("a", work).step("b", work)
    async with (
        FluxEngine(storage=reopen(), clock=clock, workflows=[flow]) as one,
        FluxEngine(storage=reopen(), clock=clock, workflows=[flow]) as two,
    ):
        completions: Counter[str] = Counter()
        all_done = asyncio.Event()

        def completed(event: Any) -> None:
            completions.update([event.run_id])
            if sum(completions.values()) >= 40:
                all_done.set()

        for engine in (one, two):
            engine.on("workflow_complete", completed)
        run_ids = [await one.start(flow) for _ in range(40)]
        async with one.worker(concurrency=5) as w1, two.worker(concurrency=5) as w2:
            await all_done.wait()  # some runs end in the other engine: told by its events
            results = [await one.get(run_id) for run_id in run_ids]

    assert {r.status for r in results} == {RunStatus.COMPLETED}
    assert len(counts) == 80
    assert set(counts.values()) == {1}
    assert w1.completed + w2.completed == 40
    assert completions == Counter(run_ids)  # no run finished twice


# --- shutdown -----------------------------------------------------------------------------


async def test_stop_lets_a_running_step_finish_within_the_grace_period(engine: FluxEngine) -> None:
    gate = Gate()
    run_id = await engine.start(create_workflow("finishing").step("gate", gate), {"n": 7})
    worker = engine.worker(grace_period=30)
    running = asyncio.create_task(worker.run())
    await gate.until(1)

    worker.stop()
    gate.open.set()
    await running

    result = await engine.get(run_id)
    assert result.status == RunStatus.COMPLETED
    assert result.outputs == {"gate": 7}


async def test_a_step_still_running_after_the_grace_period_is_released(engine: FluxEngine) -> None:
    gate = Gate()
    flow = create_workflow("released").step("gate", gate)
    run_id = await engine.start(flow, {"n": 3})
    worker = engine.worker(grace_period=0)
    running = asyncio.create_task(worker.run())
    await gate.until(1)

    worker.stop()
    await running
    stored = await engine.storage.load(run_id)

    assert stored is not None
    assert stored.status == RunStatus.RUNNING
    assert (stored.owner, stored.lease_expires_at) == (None, None)
    gate.open.set()
    async with engine.worker():  # the next worker takes the released run at once
        result = await engine.wait_result(run_id, timeout=10)
    assert result.outputs == {"gate": 3}
    assert gate.calls == 2


# --- start and wait_result ----------------------------------------------------------------


async def test_start_returns_an_id_at_once_and_wait_result_waits(engine: FluxEngine) -> None:
    gate = Gate()
    run_id = await engine.start(create_workflow("later").step("gate", gate), {"n": 5})
    assert isinstance(run_id, str)
    assert (await engine.get(run_id)).status == RunStatus.PENDING

    async with engine.worker():
        waiting = asyncio.create_task(engine.wait_result(run_id))
        await gate.until(1)
        assert not waiting.done()
        gate.open.set()
        result = await waiting

    assert result.status == RunStatus.COMPLETED
    assert result.outputs == {"gate": 5}


async def test_start_with_a_chosen_run_id(engine: FluxEngine) -> None:
    run_id = await engine.start(create_workflow("named").step("x", lambda ctx: 1), run_id="order-77")
    assert run_id == "order-77"
    assert (await engine.get("order-77")).status == RunStatus.PENDING


async def test_wait_result_times_out_on_the_engine_clock(engine: FluxEngine, clock: FakeClock) -> None:
    run_id = await engine.start(create_workflow("nobody-drives-it").step("x", lambda ctx: 1))
    waiting = asyncio.create_task(engine.wait_result(run_id, timeout=0.05))
    await clock.wait_for_timers()
    await clock.advance(0.04)
    assert not waiting.done()
    await clock.advance(0.01)
    with pytest.raises(TimeoutError) as caught:
        await waiting
    message = str(caught.value)
    assert f"run {run_id} of workflow 'nobody-drives-it' did not finish within 0.05 s" in message
    assert "it is pending; no worker has started it yet: run one with engine.worker()" in message


async def test_wait_result_timeout_says_what_a_suspended_run_waits_for(
    engine: FluxEngine, clock: FakeClock
) -> None:
    run = await engine.execute(create_workflow("needs-approval").wait_for_signal("approve"))
    waiting = asyncio.create_task(engine.wait_result(run.id, timeout=0.05))
    await clock.wait_for_timers()
    await clock.advance(0.05)
    with pytest.raises(TimeoutError, match=r"within 0\.05 s: it is suspended; it waits for a signal"):
        await waiting


async def test_wait_result_of_a_finished_run_returns_at_once(engine: FluxEngine) -> None:
    done = await engine.execute(create_workflow("quick").step("x", lambda ctx: 1))
    assert (await engine.wait_result(done.id, timeout=5)).status == RunStatus.COMPLETED


async def test_wait_result_of_an_unknown_run_raises(engine: FluxEngine) -> None:
    with pytest.raises(RunNotFoundError):
        await engine.wait_result("nope", timeout=1)


async def test_wait_result_sees_a_run_finished_by_another_engine(
    reopen: StorageFactory, clock: FakeClock
) -> None:
    flow = create_workflow("elsewhere").step("x", lambda ctx: "done")
    async with (
        FluxEngine(storage=reopen(), clock=clock, poll_interval=0.01) as waiter,
        FluxEngine(storage=reopen(), clock=clock, workflows=[flow]) as driver,
    ):
        finished = asyncio.Event()
        driver.on("workflow_complete", lambda event: finished.set())
        run_id = await waiter.start(flow)
        waiting = asyncio.create_task(waiter.wait_result(run_id, timeout=10))
        async with driver.worker():
            driver.notify()
            await finished.wait()
            await clock.advance(0.01)  # the waiter's next poll, on the engines' clock
            result = await waiting
    assert result.outputs == {"x": "done"}


# --- races between workers ----------------------------------------------------------------


class FinishedBehindYourBack(MemoryStorage):
    """A store where another worker finishes a run between a look at it and the claim."""

    def __init__(self, final: RunStatus) -> None:
        super().__init__()
        self.final = final
        self.raced: set[str] = set()
        self.finished_elsewhere = asyncio.Event()

    async def claim(
        self,
        run_id: str,
        owner: str,
        lease_expires_at: datetime,
        *,
        now: datetime,
        takeover: str | None = None,
    ) -> RunRecord | None:
        stored = await self.load(run_id)
        if stored is not None and run_id not in self.raced:
            self.raced.add(run_id)
            done = attrs.evolve(stored, status=self.final, finished_at=now, owner=None, lease_expires_at=None)
            await self.save(done)
            self.finished_elsewhere.set()
        return await super().claim(run_id, owner, lease_expires_at, now=now, takeover=takeover)


@pytest.mark.parametrize("final", [RunStatus.COMPLETED, RunStatus.FAILED])
async def test_a_worker_does_not_drive_a_run_that_ended_before_its_claim(
    clock: FakeClock, final: RunStatus
) -> None:
    calls: list[str] = []
    storage = FinishedBehindYourBack(final)
    recorder = EventRecorder()
    flow = create_workflow("raced").step("only", lambda ctx: calls.append("only"))
    async with FluxEngine(storage=storage, clock=clock) as engine:
        engine.on("*", recorder)
        run_id = await engine.start(flow)
        async with engine.worker() as worker:
            waiting = asyncio.create_task(engine.wait_result(run_id, timeout=10))
            await storage.finished_elsewhere.wait()
            await clock.advance(engine.poll_interval)  # the next poll sees the run ended
            result = await waiting
            engine.notify()
            await asyncio.sleep(0)
        stored = await storage.load(run_id)

    assert result.status == final
    assert calls == []
    assert recorder.names == []
    assert worker.completed == 0
    assert stored is not None and stored.lease_expires_at is None  # the claim was given back


@pytest.mark.parametrize("final", [RunStatus.COMPLETED, RunStatus.FAILED])
async def test_recover_does_not_drive_a_run_that_ended_before_its_claim(
    clock: FakeClock, final: RunStatus
) -> None:
    calls: list[str] = []
    storage = FinishedBehindYourBack(final)
    flow = create_workflow("raced").step("only", lambda ctx: calls.append("only"))
    async with FluxEngine(storage=storage, clock=clock) as engine:
        run_id = await engine.start(flow)
        recovered = await engine.recover()
        stored = await storage.load(run_id)

    assert recovered == []
    assert calls == []
    assert stored is not None and stored.status == final and stored.lease_expires_at is None
