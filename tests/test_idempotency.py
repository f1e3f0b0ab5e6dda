"""Idempotency keys: a key reused within its TTL returns the run it started."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from flux import FluxEngine, InvalidInputError, RunStatus, StepContext, Storage, create_workflow
from flux.testing import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def engine(storage: Storage, clock: FakeClock) -> AsyncIterator[FluxEngine]:
    async with FluxEngine(storage=storage, clock=clock) as engine:
        yield engine


def counting(name: str, calls: list[str]) -> Any:
    def charge(ctx: StepContext[Any]) -> str:
        calls.append(ctx.run_id)
        return f"charged {ctx.input['amount']}"

    return create_workflow(name).step("charge", charge)


async def test_a_reused_key_returns_the_existing_run(engine: FluxEngine) -> None:
    calls: list[str] = []
    flow = counting("payment", calls)

    first = await engine.execute(flow, {"amount": 10}, idempotency_key="order-1")
    again = await engine.execute(flow, {"amount": 10}, idempotency_key="order-1")

    assert first.created is True
    assert again.created is False
    assert again.id == first.id
    assert again.status == RunStatus.COMPLETED
    assert again.outputs == {"charge": "charged 10"}
    assert calls == [first.id]
    assert len(await engine.list("payment")) == 1


async def test_start_returns_the_existing_run_id(engine: FluxEngine) -> None:
    calls: list[str] = []
    flow = counting("payment", calls)

    run_id = await engine.start(flow, {"amount": 5}, idempotency_key="order-2")
    assert await engine.start(flow, {"amount": 5}, idempotency_key="order-2") == run_id
    executed = await engine.execute(flow, {"amount": 5}, idempotency_key="order-2")

    assert (executed.id, executed.created, executed.status) == (run_id, False, RunStatus.PENDING)
    async with engine.worker():
        result = await engine.wait_result(run_id, timeout=10)
    assert result.status == RunStatus.COMPLETED
    assert calls == [run_id]


async def test_a_key_used_again_after_its_ttl_starts_a_new_run(engine: FluxEngine, clock: FakeClock) -> None:
    calls: list[str] = []
    flow = counting("payment", calls)

    first = await engine.execute(flow, {"amount": 1}, idempotency_key="k", idempotency_ttl=timedelta(hours=1))
    await clock.advance(timedelta(minutes=59))
    within = await engine.execute(
        flow, {"amount": 1}, idempotency_key="k", idempotency_ttl=timedelta(hours=1)
    )
    await clock.advance(timedelta(minutes=2))
    after = await engine.execute(flow, {"amount": 1}, idempotency_key="k", idempotency_ttl=3600)
    latest = await engine.execute(flow, {"amount": 1}, idempotency_key="k")

    assert within.id == first.id and not within.created
    assert after.id != first.id and after.created
    assert latest.id == after.id and not latest.created  # the key now points at the new run
    assert calls == [first.id, after.id]


async def test_the_default_ttl_is_a_day(engine: FluxEngine, clock: FakeClock) -> None:
    flow = counting("payment", [])
    first = await engine.execute(flow, {"amount": 1}, idempotency_key="daily")

    await clock.advance(timedelta(hours=23, minutes=59))
    assert (await engine.execute(flow, {"amount": 1}, idempotency_key="daily")).id == first.id
    await clock.advance(timedelta(minutes=2))
    assert (await engine.execute(flow, {"amount": 1}, idempotency_key="daily")).id != first.id


async def test_keys_belong_to_one_workflow_name(engine: FluxEngine) -> None:
    calls: list[str] = []
    payment, refund = counting("payment", calls), counting("refund", calls)

    paid = await engine.execute(payment, {"amount": 3}, idempotency_key="order-3")
    refunded = await engine.execute(refund, {"amount": 3}, idempotency_key="order-3")

    assert paid.id != refunded.id
    assert paid.created and refunded.created
    assert calls == [paid.id, refunded.id]


async def test_runs_without_a_key_are_never_deduplicated(engine: FluxEngine) -> None:
    flow = counting("payment", [])
    first, second = await engine.execute(flow, {"amount": 1}), await engine.execute(flow, {"amount": 1})
    assert first.id != second.id
    assert first.created and second.created


async def test_concurrent_calls_with_one_key_make_one_run(engine: FluxEngine) -> None:
    calls: list[str] = []
    flow = counting("payment", calls)

    results = await asyncio.gather(
        *(engine.execute(flow, {"amount": 9}, idempotency_key="double-click") for _ in range(5))
    )

    assert len({r.id for r in results}) == 1
    assert sorted(r.created for r in results) == [False] * 4 + [True]
    assert len(calls) == 1
    assert len(await engine.list("payment")) == 1


async def test_concurrent_starts_with_one_key_make_one_run(engine: FluxEngine) -> None:
    flow = counting("payment", [])
    ids = await asyncio.gather(
        *(engine.start(flow, {"amount": 9}, idempotency_key="twice") for _ in range(5))
    )
    assert len(set(ids)) == 1
    assert len(await engine.list("payment")) == 1


async def test_a_key_shared_by_two_engines_on_one_store(storage: Storage, clock: FakeClock) -> None:
    flow = counting("payment", [])
    async with (
        FluxEngine(storage=storage, clock=clock) as one,
        FluxEngine(storage=storage, clock=clock) as two,
    ):
        first = await one.execute(flow, {"amount": 2}, idempotency_key="shared")
        second = await two.execute(flow, {"amount": 2}, idempotency_key="shared")
    assert second.id == first.id and not second.created


@pytest.mark.parametrize("bad", ["", 42])
async def test_a_key_must_be_a_non_empty_string(engine: FluxEngine, bad: Any) -> None:
    with pytest.raises(InvalidInputError, match="idempotency_key must be a non-empty str"):
        await engine.execute(counting("payment", []), {"amount": 1}, idempotency_key=bad)
    assert await engine.list() == []


async def test_the_ttl_must_be_positive(engine: FluxEngine) -> None:
    with pytest.raises(ValueError, match="idempotency_ttl must be a positive"):
        await engine.execute(counting("payment", []), {"amount": 1}, idempotency_key="k", idempotency_ttl=0)


async def test_wait_result_with_a_zero_timeout_returns_a_finished_run(storage: Storage) -> None:
    async with FluxEngine(storage) as engine:
        done = await engine.execute(create_workflow("quick").step("a", lambda ctx: 1))
        assert (await engine.wait_result(done.id, timeout=0)).status == "completed"
