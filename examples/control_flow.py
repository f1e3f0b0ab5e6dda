"""Control flow: a parallel group, a map, a branch, a review loop, a failure route, a child run.

A catalogue import on SQLite (a temporary file, or the path in ``FLUX_DB``): three lookups run
side by side, every product is priced by a map (one recorded visit per product), a branch picks
the publishing channel, an editor loop goes round until the copy is approved (each round is a
recorded visit), a flaky upload falls back to a manual queue, and a child workflow sends the
announcement. It prints the history, the plan as Mermaid and the run's metrics.

Run it from the root of a checkout (the first command sets up .venv if needed):

    python3 dev.py run examples/control_flow.py
    .venv/bin/python examples/control_flow.py
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import flux
from flux import FluxEngine, RetryPolicy, StepContext, create_workflow
from flux.storage import SQLiteStorage


async def fetch(ctx: StepContext[Any]) -> str:
    await asyncio.sleep(0.01)  # a network call
    return f"{ctx.step} ok"


def products(ctx: StepContext[Any]) -> list[dict[str, Any]]:
    return [{"sku": f"SKU-{n}", "cost": 10 + n} for n in range(8)]


async def price(ctx: StepContext[Any], product: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(0.001)
    return {"sku": product["sku"], "price": round(product["cost"] * 1.4, 2)}


def channel(ctx: StepContext[Any]) -> str:
    return "shop" if len(ctx.outputs["price"]) < 100 else "marketplace"


def draft(ctx: StepContext[Any]) -> str:
    ctx.data["round"] = ctx.data.get("round", 0) + 1
    return f"copy v{ctx.data['round']}"


def review(ctx: StepContext[Any]) -> Any:
    if ctx.data["round"] < 3:
        return flux.goto("draft")  # not good enough yet: another round
    return "approved"


def upload(ctx: StepContext[Any]) -> None:
    raise ConnectionError("CDN unreachable")


def manual_upload(ctx: StepContext[Any]) -> str:
    failure = ctx.failure
    assert failure is not None
    return f"queued for manual upload ({failure.type}: {failure.message})"


announce = create_workflow("announce").step("compose", lambda ctx: f"{ctx.input['count']} new products")

catalogue = (
    create_workflow("catalogue-import")
    .parallel(
        "lookups",
        create_workflow("suppliers").step("fetch-suppliers", fetch),
        create_workflow("tax").step("fetch-tax", fetch),
        create_workflow("stock").step("fetch-stock", fetch).step("reserve-stock", fetch),
    )
    .step("products", products)
    .map("price", price, over=lambda ctx: ctx.outputs["products"], concurrency=4)
    .branch(
        "channel",
        on=channel,
        cases={"shop": create_workflow("shop").step("publish-shop", fetch)},
        default=create_workflow("marketplace").step("publish-marketplace", fetch),
    )
    .step("draft", draft)
    .step("review", review, goto=["draft"], max_visits=5)
    .step("upload", upload, retries=1, retry=RetryPolicy(initial_delay=0.01), on_failure="manual-upload")
    .step("manual-upload", manual_upload)
    .child("announce", announce, input=lambda ctx: {"count": len(ctx.outputs["price"])})
    .build()
)


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(os.environ.get("FLUX_DB") or Path(tmp) / "catalogue.db")
        async with FluxEngine(SQLiteStorage(db)) as engine:
            result = await engine.execute(catalogue)
        print(f"run {result.status}")
        for record in result.history:
            print(f"  {record.seq:2} {record.step:22} {record.status}")
        print(f"prices: {result.outputs['price'][:2]} ... ({len(result.outputs['price'])} products)")
        print(f"channel: {result.outputs['channel']}, copy: {result.outputs['draft']}")
        print(f"upload: {result.outputs['manual-upload']}")
        print(f"announcement: {result.outputs['announce']['outputs']['compose']}")
        report = flux.run_metrics(result)
        work = f"{report.busy:.3f}s of work in {report.wall:.3f}s"
        print(f"metrics: {work} (parallelism {report.parallelism:.1f})")
        print(f"critical path: {' -> '.join(report.critical_path[:4])} ...")
        print("plan:")
        print(catalogue.to_mermaid())
        rounds = [r.step for r in result.history].count("draft")
        if result.status != "completed" or rounds != 3:
            sys.exit(f"unexpected outcome: {result.status}, {rounds} drafts")
    print("every construct went the expected way")


if __name__ == "__main__":
    asyncio.run(main())
