"""What mypy infers for ``ctx.input`` once ``.input(T)`` is declared.

Checked by ``tests/test_typing.py`` (and by ``mypy --strict flux tests``): an ``assert_type`` that
stops holding is a type error here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict, assert_type

import attrs

from flux import FluxEngine, RunResult, StepContext, Workflow, WorkflowBuilder, create_workflow


class Tier(enum.Enum):
    BASIC = "basic"
    GOLD = "gold"


@dataclass
class Order:
    order_id: str
    amount: float
    placed_at: datetime


@attrs.frozen
class Customer:
    name: str
    tier: Tier


class Ticket(TypedDict):
    code: str
    seats: int


def fetch(ctx: StepContext[Order]) -> str:
    return ctx.input.order_id


orders = (
    create_workflow("orders")
    .input(Order)
    .validate(lambda order: assert_type(order, Order).amount > 0)
    .step("fetch", fetch)
    .step("lambda", lambda ctx: assert_type(ctx.input, Order).placed_at.isoformat())
    .step("when", fetch, when=lambda ctx: assert_type(ctx.input, Order).amount > 100)
    .step("undo", fetch, compensate=lambda ctx: assert_type(ctx, StepContext[Order]).input.order_id)
    .commit("ship", lambda ctx: assert_type(ctx.input.amount, float))
)
assert_type(orders, WorkflowBuilder[Order])
assert_type(orders.build(), Workflow[Order])

customers = (
    create_workflow("customers")
    .input(Customer)
    .step("greet", lambda ctx: assert_type(ctx.input, Customer).name)
    .step("tier", lambda ctx: assert_type(ctx.input.tier, Tier).value)
)
assert_type(customers, WorkflowBuilder[Customer])

tickets = (
    create_workflow("tickets")
    .input(Ticket)
    .step("code", lambda ctx: assert_type(ctx.input, Ticket)["code"])
    .step("seats", lambda ctx: assert_type(ctx.input["seats"], int))
)
assert_type(tickets, WorkflowBuilder[Ticket])

untyped = create_workflow("anything").step("x", lambda ctx: assert_type(ctx.input, Any))
assert_type(untyped, WorkflowBuilder[Any])


async def run(engine: FluxEngine) -> None:
    result = await engine.execute(orders, Order("1", 9.5, datetime(2030, 1, 1)))
    assert_type(result, RunResult)
    await engine.execute(orders.build(), {"order_id": "1", "amount": 9.5, "placed_at": "2030-01-01"})
    await engine.execute(tickets, Ticket(code="A", seats=2))
