"""Order fulfillment: the README demo, a durable workflow on SQLite.

Every step is checkpointed to a SQLite file (``flux.db`` in the current directory, or the
path in the ``FLUX_DB`` environment variable) before the next one starts. Event hooks print
what happens; a flaky payment call is retried; a VIP-only step runs only for VIP orders; the
shipping and receipt steps are commit steps (irreversible side effects).

Run it from the root of a checkout (the first command sets up .venv if needed):

    python3 dev.py run examples/order_fulfillment.py
    .venv/bin/python examples/order_fulfillment.py
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from flux import FluxEngine, RetryPolicy, StepContext, create_workflow
from flux.events import StepComplete, StepRetry, StepSkip, StepStart, WorkflowComplete
from flux.storage import SQLiteStorage


@dataclass
class Order:
    order_id: str
    customer: str
    items: list[str] = field(default_factory=list)
    amount: float = 0.0
    vip: bool = False


_payment_failures: set[str] = set()  # orders whose first payment attempt already failed


def validate_order(ctx: StepContext[Order]) -> dict[str, Any]:
    order = ctx.input
    ctx.data["order"] = {"id": order.order_id, "vip": order.vip, "items": len(order.items)}
    return {"total": round(order.amount, 2)}


async def reserve_stock(ctx: StepContext[Order]) -> list[str]:
    await asyncio.sleep(0.01)  # pretend to call the warehouse
    ctx.data["reserved"] = list(ctx.input.items)
    return [f"SKU-{item.upper()}" for item in ctx.input.items]


def release_stock(ctx: StepContext[Order]) -> None:
    print(f"    (compensation) released {ctx.outputs['reserve-stock']}")


async def charge_card(ctx: StepContext[Order]) -> str:
    # The payment provider drops the first call of every order: flux retries it. The
    # idempotency key is the same on every attempt, so the provider charges only once.
    if ctx.input.order_id not in _payment_failures:
        _payment_failures.add(ctx.input.order_id)
        raise ConnectionError("payment gateway unreachable")
    ctx.log.info("charging %.2f with idempotency key %s", ctx.input.amount, ctx.idempotency_key)
    return f"ch_{ctx.run_id[:8]}"


def refund(ctx: StepContext[Order]) -> None:
    print(f"    (compensation) refunded {ctx.outputs['charge']}")


def vip_gift(ctx: StepContext[Order]) -> str:
    return "gift wrap + handwritten note"


def ship_order(ctx: StepContext[Order]) -> str:
    return f"TRACK-{ctx.input.order_id}"


def send_receipt(ctx: StepContext[Order]) -> str:
    return f"receipt sent to {ctx.input.customer}"


order_flow = (
    create_workflow("order-fulfillment")
    .input(Order)
    .validate(lambda order: order.amount > 0)
    .step("validate", validate_order)
    .step("reserve-stock", reserve_stock, compensate=release_stock)
    .step(
        "charge",
        charge_card,
        retries=3,
        timeout=10,
        retry=RetryPolicy(initial_delay=0.05, jitter=0),
        compensate=refund,
    )
    .step("vip-gift", vip_gift, when=lambda ctx: ctx.data["order"]["vip"])
    .commit("ship", ship_order)
    .commit("send-receipt", send_receipt)
    .build()
)


workflows = [order_flow]  # what `flux --app examples.order_fulfillment` knows

def on_start(event: StepStart) -> None:
    print(f"  -> {event.step} (attempt {event.attempt})")


def on_complete(event: StepComplete) -> None:
    print(f"  ok {event.step} in {event.duration:.3f}s: {event.output!r}")


def on_retry(event: StepRetry) -> None:
    error = event.error.message
    print(f"  !! {event.step} attempt {event.attempt} failed ({error}); retry in {event.delay}s")


def on_skip(event: StepSkip) -> None:
    print(f"  -- {event.step} skipped (its condition is false)")


def on_done(event: WorkflowComplete) -> None:
    print(f"  run {event.run_id} completed in {event.duration:.3f}s")


def check(ok: bool, what: str) -> None:
    if not ok:
        sys.exit(f"unexpected outcome: {what}")


async def main() -> None:
    db = os.environ.get("FLUX_DB", "flux.db")
    orders = [
        Order(order_id="A-1001", customer="ada@example.com", items=["book", "lamp"], amount=54.90),
        Order(order_id="A-1002", customer="grace@example.com", items=["chair"], amount=129.00, vip=True),
    ]
    run_ids = []
    async with FluxEngine(storage=SQLiteStorage(db)) as engine:
        engine.on("step_start", on_start)
        engine.on("step_complete", on_complete)
        engine.on("step_retry", on_retry)
        engine.on("step_skip", on_skip)
        engine.on("workflow_complete", on_done)
        for order in orders:
            print(f"order {order.order_id} (vip={order.vip})")
            result = await engine.execute(order_flow, order)
            check(result.status == "completed", f"{order.order_id} ended {result.status}: {result.error}")
            check(result.outputs["ship"] == f"TRACK-{order.order_id}", "tracking number")
            check(("vip-gift" in result.outputs) == order.vip, "vip-gift runs for VIP orders only")
            run_ids.append(result.id)

    # A new engine on the same file sees the stored runs: nothing lived only in memory.
    async with FluxEngine(storage=SQLiteStorage(db)) as engine:
        for run_id in run_ids:
            stored = await engine.get(run_id)
            check(stored.status == "completed", f"stored run {run_id} is {stored.status}")
            charge = next(record for record in stored.history if record.step == "charge")
            check(charge.attempts == 2, f"charge took {charge.attempts} attempts, expected 2")
            steps = ", ".join(f"{r.step}={r.status.value}" for r in stored.history)
            print(f"stored in {db}: run {run_id} {stored.status}: {steps}")
        total = len(await engine.list(name="order-fulfillment"))
        print(f"{db} holds {total} order-fulfillment run(s)")


if __name__ == "__main__":
    asyncio.run(main())
