"""Workflows the `flux` command tests run (``--app flux_app`` or ``flux_app:greet``)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from flux import StepContext, create_workflow


def hello(ctx: StepContext[Any]) -> str:
    ctx.log.info("greeting %s", ctx.input["name"])
    ctx.log.info("x" * 120)  # long enough to be cut by `flux show`
    ctx.data["greeted"] = ctx.input["name"]
    return f"hello {ctx.input['name']}"


def shout(ctx: StepContext[Any]) -> str:
    return str(ctx.outputs["hello"]).upper() + "!" * 100  # long enough to be cut by `flux show`


def broken(ctx: StepContext[Any]) -> str:
    if not os.environ.get("FLUX_TEST_FIXED"):
        raise ValueError("card declined")
    return "charged"


def ship(ctx: StepContext[Any]) -> str:
    return "shipped"


def finish(ctx: StepContext[Any]) -> str:
    return f"approved by {ctx.outputs['approved']['by']}"


async def hold(ctx: StepContext[Any]) -> str:
    """With FLUX_TEST_HOLD set, waits until cancelled: a run a worker holds in flight."""
    if os.environ.get("FLUX_TEST_HOLD"):
        await asyncio.Event().wait()
    return "done"


greet = create_workflow("greet").step("hello", hello).step("shout", shout)
fails = create_workflow("fails").step("charge", broken, retries=0).step("ship", ship).build()
approval = (
    create_workflow("approval").step("ship", ship).wait_for_signal("approved").step("finish", finish).build()
)
held = create_workflow("held").step("hold", hold).step("ship", ship).build()
not_a_workflow = {"name": "greet"}

workflows = [greet, fails, approval, held]
