"""Faults and poison without a crash: unstorable values, damaged rows, poison runs in
``recover()``, input types that changed under stored runs. Each test names the fault it
injects; healthy runs must go on whatever happens to the bad one."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import attrs
import pytest

from flux import (
    FluxEngine,
    PlanMismatchError,
    RunStatus,
    SerializationError,
    StepContext,
    StepStatus,
    StorageCorruptedError,
    StorageError,
    WorkflowNotRegisteredError,
    create_workflow,
)
from flux.records import RunRecord, StepRecord
from flux.storage import MemoryStorage, SQLiteStorage
from flux.testing import FakeClock

LONE_SURROGATE = b"\xff".decode("utf-8", "surrogateescape")


# --- item 2: values storage cannot hold ---------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "what"),
    [
        (LONE_SURROGATE, "lone surrogate"),
        ({"nested": ["ok", LONE_SURROGATE]}, "lone surrogate"),
        ({LONE_SURROGATE: 1}, "lone surrogate"),
        (10**5000, "more than 4300 digits"),
        ([1, -(10**4400)], "more than 4300 digits"),
    ],
    ids=["str", "nested-str", "key", "big-int", "nested-big-int"],
)
async def test_unstorable_data_fails_its_step_naming_the_key(tmp_path: Path, value: Any, what: str) -> None:
    """Bad input: ``ctx.data["bad"] = value`` with a lone surrogate (in a str, nested, as a
    key) or an int over Python's str-digit limit (``10**5000``). Used to pass the JSON check
    and break storage (UnicodeEncodeError, ValueError); now SerializationError naming the key."""

    def write(ctx: StepContext[Any]) -> None:
        ctx.data["bad"] = value

    async with FluxEngine(SQLiteStorage(tmp_path / "flux.db"), clock=FakeClock()) as engine:
        result = await engine.execute(create_workflow("w").step("a", write))
    assert result.status == RunStatus.FAILED
    assert result.error is not None and result.error.type == "SerializationError"
    assert "ctx.data['bad']" in result.error.message and what in result.error.message


async def test_a_lone_surrogate_data_key_is_refused_where_it_is_set() -> None:
    """Bad input: ``ctx.data[<lone surrogate>] = 1``: refused at once, like a non-str key."""
    from flux.context import RunData

    with pytest.raises(SerializationError, match="valid Unicode text"):
        RunData()[LONE_SURROGATE] = 1


async def test_one_unstorable_run_does_not_fail_its_batch(tmp_path: Path) -> None:
    """Fault: 30 runs finish their step at once on SQLite (so their checkpoints share
    group-commit batches), and one checkpoint holds a value SQLite cannot bind, smuggled past
    the JSON check. It used to fail every run of its batch (28 of 30 innocent runs left
    ``running``); now only that run's checkpoint fails and the 29 others complete."""
    release, all_in = asyncio.Event(), asyncio.Event()
    entered: list[str] = []

    async def step(ctx: StepContext[Any]) -> Any:
        entered.append(ctx.run_id)
        if len(entered) == 30:
            all_in.set()
        await release.wait()
        return "ok"

    storage = SQLiteStorage(tmp_path / "flux.db")
    original = storage.checkpoint
    smuggled: list[str] = []

    async def smuggle(run: RunRecord, steps: Sequence[StepRecord] = ()) -> None:
        if run.id == "r13" and any(s.output == "ok" for s in steps):
            steps = [attrs.evolve(s, output=LONE_SURROGATE) for s in steps]
            smuggled.append(run.id)
        await original(run, steps)

    storage.checkpoint = smuggle  # type: ignore[method-assign]
    async with FluxEngine(storage, clock=FakeClock()) as engine:
        flow = create_workflow("batch").step("a", step)
        runs = [asyncio.create_task(engine.execute(flow, run_id=f"r{i}")) for i in range(30)]
        await all_in.wait()
        release.set()
        await asyncio.gather(*runs, return_exceptions=True)
        statuses = {r.id: r.status for r in await storage.list()}
    assert smuggled == ["r13"]
    assert statuses.pop("r13") != RunStatus.COMPLETED
    assert set(statuses.values()) == {RunStatus.COMPLETED}


# --- item 6: one damaged row ------------------------------------------------------------------


def damage(path: Path, run_id: str) -> None:
    """Break the run's input column outside flux, as a bad disk or a hand edit would."""
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE flux_runs SET input = '{broken' WHERE id = ?", (run_id,))
    conn.close()


async def test_a_damaged_row_does_not_stall_the_worker(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Fault: one of five pending runs has a broken JSON column. ``due()`` used to raise on
    it, so the worker completed none; now it is skipped and logged (run id and column), the
    four healthy runs complete, ``list`` shows them, and loading the bad one still raises."""
    path = tmp_path / "flux.db"
    async with FluxEngine(SQLiteStorage(path), clock=FakeClock()) as engine:
        flow = create_workflow("w").step("a", lambda ctx: "done")
        ids = [await engine.start(flow, run_id=f"r{i}") for i in range(5)]
        damage(path, "r2")
        caplog.set_level(logging.ERROR, logger="flux")
        async with engine.worker():
            results = [await engine.wait_result(run_id, timeout=10) for run_id in ids if run_id != "r2"]
        assert {r.status for r in results} == {RunStatus.COMPLETED}
        assert sorted(r.id for r in await engine.list()) == ["r0", "r1", "r3", "r4"]
        with pytest.raises(StorageCorruptedError, match=r"run 'r2': column runs\.input"):
            await engine.get("r2")
    assert any("run 'r2': column runs.input" in record.getMessage() for record in caplog.records)


async def test_recover_skips_a_damaged_row_and_resumes_the_others(tmp_path: Path) -> None:
    """Fault: a damaged row among runs left ``running`` by a dead engine. ``recover()`` used
    to raise on the listing; now it resumes the healthy ones."""
    path = tmp_path / "flux.db"
    flow = create_workflow("w").step("a", lambda ctx: "done")
    async with FluxEngine(SQLiteStorage(path), clock=FakeClock()) as dead:
        for run_id in ("ok-1", "bad", "ok-2"):
            await dead.start(flow, run_id=run_id)
    damage(path, "bad")
    async with FluxEngine(SQLiteStorage(path), clock=FakeClock(), workflows=[flow]) as engine:
        recovered = await engine.recover()
    assert sorted((r.id, r.status) for r in recovered) == [
        ("ok-1", RunStatus.COMPLETED),
        ("ok-2", RunStatus.COMPLETED),
    ]


# --- item 9: recover() attempts every run -------------------------------------------------------


async def test_recover_attempts_every_run_and_reports_failures_per_run(clock: FakeClock) -> None:
    """Fault: among stranded runs, one of a workflow this engine does not know and one whose
    resume raises (its storage checkpoint fails). ``recover()`` used to stop at the first
    poison run (``gather`` without ``return_exceptions``) and lose the others' results. Now
    every run is attempted: healthy ones are returned, each failure is reported by run id."""
    storage = MemoryStorage()
    healthy = create_workflow("healthy").step("a", lambda ctx: "done")
    poison = create_workflow("poison").step("a", lambda ctx: "done")
    async with FluxEngine(storage, clock=clock) as dead:
        unknown = create_workflow("unknown").step("a", lambda ctx: 1)
        for run_id, flow in (("h1", healthy), ("p1", poison), ("h2", healthy), ("u1", unknown)):
            await dead.start(flow, run_id=run_id)
    original = storage.checkpoint

    async def failing(run: RunRecord, steps: Sequence[StepRecord] = ()) -> None:
        if run.id == "p1":
            raise OSError("disk gone for p1")
        await original(run, steps)

    storage.checkpoint = failing  # type: ignore[method-assign]
    async with FluxEngine(storage, clock=clock, workflows=[healthy, poison]) as engine:
        recovered = await engine.recover()
    assert sorted((r.id, r.status) for r in recovered) == [
        ("h1", RunStatus.COMPLETED),
        ("h2", RunStatus.COMPLETED),
    ]
    assert sorted(recovered.failures) == ["p1", "u1"]
    assert isinstance(recovered.failures["u1"], WorkflowNotRegisteredError)


# --- item 10: the input type changed under stored runs ------------------------------------------


@dataclass
class OrderV1:
    order_id: str


@dataclass
class OrderV2:
    order_id: str
    currency: str  # a new required field, deployed while v1 runs were stored


async def test_a_run_whose_input_no_longer_fits_fails_once_with_the_field(clock: FakeClock) -> None:
    """Fault: a run stored with ``OrderV1`` input; a deploy adds the required field
    ``currency``. Restoring used to raise a raw cattrs error after the claim and the worker
    retried it in a tight loop (3,046 errors in 4 s). Now the run ends ``failed`` at once with
    InvalidInputError naming the field, and the worker drives it exactly once."""
    storage = MemoryStorage()
    calls: list[str] = []

    def charge(ctx: StepContext[Any]) -> None:
        calls.append(ctx.run_id)

    old = create_workflow("order").input(OrderV1).step("charge", charge)
    new = create_workflow("order").input(OrderV2).step("charge", charge)
    async with FluxEngine(storage, clock=clock) as before:
        run_id = await before.start(old, OrderV1("o-1"))
    claims = 0
    original = storage.claim

    async def counting(*args: Any, **kwargs: Any) -> RunRecord | None:
        nonlocal claims
        claims += 1
        return await original(*args, **kwargs)

    storage.claim = counting  # type: ignore[method-assign]
    async with FluxEngine(storage, clock=clock, workflows=[new]) as engine, engine.worker():
        result = await engine.wait_result(run_id, timeout=10)
    assert result.status == RunStatus.FAILED
    assert result.error is not None and result.error.type == "InvalidInputError"
    assert "currency" in result.error.message
    assert calls == [] and claims == 1


async def test_plan_mismatch_lists_both_sides_of_a_rename(clock: FakeClock) -> None:
    """Bad input: a step renamed (``charge`` -> ``bill``) under a stored run. PlanMismatchError
    used to name only the step that ran; now it names both the old and the new name."""
    storage = MemoryStorage()
    gate = asyncio.Event()

    async def wait(ctx: StepContext[Any]) -> None:
        await gate.wait()

    v1 = create_workflow("w").step("charge", lambda ctx: 1).step("ship", wait)
    v2 = create_workflow("w").step("bill", lambda ctx: 1).step("ship", wait)
    async with FluxEngine(storage, clock=clock) as engine:
        run = await engine.start(v1, run_id="r1")
        stored = await storage.load(run)
        assert stored is not None
        await storage.save(
            attrs.evolve(
                stored, steps=(StepRecord(seq=0, step="charge", status=StepStatus.COMPLETED, attempts=1),)
            )
        )
    async with FluxEngine(storage, clock=clock, workflows=[v2]) as engine:
        with pytest.raises(PlanMismatchError) as caught:
            await engine.resume("r1")
    assert "step 'charge' ran in the run but is not in the plan" in caught.value.differences
    assert "plan step 'bill' is not in the run's history" in caught.value.differences


# --- item 15: a gap in the stored step history --------------------------------------------------


async def test_a_gap_in_step_seq_fails_the_run_instead_of_overwriting(clock: FakeClock) -> None:
    """Fault: a tampered store holds step records seq 0 and 2 (no 1) for a run left running.
    The next visit used to take seq ``len(records)`` = 2 and overwrite the stored record 2;
    now the run ends ``failed`` with StorageCorruptedError naming the gap, records untouched."""
    storage = MemoryStorage()
    flow = create_workflow("w").step("a", lambda ctx: 1).step("b", lambda ctx: 2).step("c", lambda ctx: 3)
    kept = StepRecord(seq=2, step="c", status=StepStatus.COMPLETED, attempts=1, output=3)
    steps = (StepRecord(seq=0, step="a", status=StepStatus.COMPLETED, attempts=1, output=1), kept)
    await storage.save(
        RunRecord(
            id="r1",
            workflow="w",
            fingerprint=flow.build().fingerprint,
            status=RunStatus.RUNNING,
            created_at=clock.now(),
            updated_at=clock.now(),
            steps=steps,
        )
    )
    async with FluxEngine(storage, clock=clock, workflows=[flow]) as engine:
        result = await engine.resume("r1")
    assert result.status == RunStatus.FAILED
    assert result.error is not None and result.error.type == "StorageCorruptedError"
    assert "skip seq 1" in result.error.message
    stored = await storage.load("r1")
    assert stored is not None and stored.steps == steps


# --- item 3: errors that escape the step loop ----------------------------------------------------


async def test_an_error_escaping_the_loop_ends_the_run_failed(clock: FakeClock) -> None:
    """Fault: a subscriber raises ``asyncio.CancelledError`` (not an Exception, so not caught
    as a subscriber error) after step ``a``. The run used to stay ``running`` under the live
    engine, renewed by its heartbeat forever. Now it ends ``failed`` with a clear ErrorInfo."""
    storage = MemoryStorage()

    def rude(event: Any) -> None:
        raise asyncio.CancelledError

    async with FluxEngine(storage, clock=clock, on={"step_complete": rude}) as engine:
        result = await engine.execute(create_workflow("w").step("a", lambda ctx: 1).step("b", lambda ctx: 2))
    assert result.status == RunStatus.FAILED
    assert result.error is not None and result.error.type == "CancelledError"
    assert result.error.message.startswith("the engine could not continue the run")
    stored = await storage.load(result.id)
    assert stored is not None and (stored.status, stored.owner, stored.lease_expires_at) == (
        RunStatus.FAILED,
        None,
        None,
    )


async def test_a_run_whose_checkpoint_failed_is_taken_back_by_its_own_worker(clock: FakeClock) -> None:
    """Fault: the checkpoint after step ``a`` raises StorageError once. The run used to stay
    ``running`` under the live engine: its own worker skipped it and the heartbeat renewed its
    lease. Now nothing renews it, and once its lease lapses the engine's own worker takes it
    back and finishes it, running ``a`` again (at least once) and ``b`` once."""
    storage = MemoryStorage()
    original = storage.checkpoint
    failures = [StorageError("disk briefly gone")]
    calls: list[str] = []

    async def flaky(run: RunRecord, steps: Sequence[StepRecord] = ()) -> None:
        if failures and any(s.step == "a" and s.status == StepStatus.COMPLETED for s in steps):
            raise failures.pop()
        await original(run, steps)

    storage.checkpoint = flaky  # type: ignore[method-assign]
    flow = (
        create_workflow("w").step("a", lambda ctx: calls.append("a")).step("b", lambda ctx: calls.append("b"))
    )
    async with FluxEngine(storage, clock=clock, lease=30) as engine:
        with pytest.raises(StorageError, match="disk briefly gone"):
            await engine.execute(flow, run_id="r1")
        stranded = await storage.load("r1")
        assert stranded is not None and stranded.status == RunStatus.RUNNING
        assert stranded.owner == engine.owner
        async with engine.worker():
            await clock.advance(31)  # the lease lapses: nothing renewed it
            result = await engine.wait_result("r1", timeout=10)
    assert result.status == RunStatus.COMPLETED
    assert calls == ["a", "a", "b"]


async def test_resume_from_step_sees_the_data_from_before_that_step(clock: FakeClock) -> None:
    """Bad sequence: ``charge`` adds 10 to ``balance``, ``audit`` adds a note; then
    ``resume(from_step="charge")``, whose first attempt fails after its write. ``charge`` used
    to see its own earlier change (balance 10 + 10 = 20, a charge applied twice) and
    ``audit``'s note. Now every attempt sees the data as before it first ran."""
    seen: list[dict[str, Any]] = []

    def charge(ctx: StepContext[Any]) -> None:
        seen.append(dict(ctx.data))
        ctx.data["balance"] = ctx.data.get("balance", 0) + 10
        if len(seen) == 2:
            raise ConnectionError("gateway hiccup after the write")

    def audit(ctx: StepContext[Any]) -> None:
        ctx.data["note"] = "audited"

    flow = (
        create_workflow("w")
        .step("open", lambda ctx: ctx.data.update(balance=0))
        .step("charge", charge, retries=1)
        .step("audit", audit)
    )
    async with FluxEngine(MemoryStorage(), clock=clock) as engine:
        first = await engine.execute(flow)
        again = await engine.resume(first.id, from_step="charge")
    assert first.data == {"balance": 10, "note": "audited"}
    assert seen == [{"balance": 0}, {"balance": 0}, {"balance": 0}]
    assert again.data == {"balance": 10, "note": "audited"}


async def test_the_heartbeat_renews_only_runs_that_are_really_driven(clock: FakeClock) -> None:
    """Fault: run ``stranded`` lost its driver to a StorageError while run ``busy`` is being
    driven. The heartbeat used to renew every lease the engine's owner held, so ``stranded``
    never lapsed; now it names only ``busy``."""
    storage = MemoryStorage()
    original_checkpoint, original_renew = storage.checkpoint, storage.renew
    renewed: list[list[str]] = []
    beat = asyncio.Event()
    failures = [StorageError("disk briefly gone")]

    async def flaky(run: RunRecord, steps: Sequence[StepRecord] = ()) -> None:
        if run.id == "stranded" and failures and any(s.status == StepStatus.COMPLETED for s in steps):
            raise failures.pop()
        await original_checkpoint(run, steps)

    async def spy(owner: str, lease_expires_at: Any, run_ids: Sequence[str]) -> int:
        renewed.append(sorted(run_ids))
        beat.set()
        return await original_renew(owner, lease_expires_at, run_ids)

    storage.checkpoint = flaky  # type: ignore[method-assign]
    storage.renew = spy  # type: ignore[method-assign]
    gate, started = asyncio.Event(), asyncio.Event()

    async def wait(ctx: StepContext[Any]) -> None:
        started.set()
        await gate.wait()

    async with FluxEngine(storage, clock=clock, lease=30) as engine:  # a heartbeat every 10 s
        with pytest.raises(StorageError):
            await engine.execute(create_workflow("w").step("a", lambda ctx: 1), run_id="stranded")
        busy = asyncio.create_task(engine.execute(create_workflow("b").step("b", wait), run_id="busy"))
        await started.wait()
        await clock.advance(11)  # the heartbeat runs on the engine's clock
        await beat.wait()
        gate.set()
        await busy
    assert renewed and all(ids == ["busy"] for ids in renewed)
