"""Branching with ``when``: steps that run only when a condition holds.

A loan application is scored; small loans with a good score are approved automatically, the
rest go to manual review, and large loans also need a second signature. Each ``when``
predicate is evaluated once, when the run reaches the step; its result is recorded, so a
resumed run never evaluates it again. A false predicate marks the step ``skipped``.

Run it from the root of a checkout (the first command sets up .venv if needed):

    python3 dev.py run examples/branching.py
    .venv/bin/python examples/branching.py
"""

from __future__ import annotations

import asyncio
import sys
from typing import TypedDict

from flux import FluxEngine, StepContext, create_workflow


class Application(TypedDict):
    applicant: str
    amount: int
    income: int


def score(ctx: StepContext[Application]) -> int:
    app = ctx.input
    points = min(850, 300 + 100 * app["income"] // max(app["amount"], 1))
    ctx.data["score"] = points
    return points


def auto_approve(ctx: StepContext[Application]) -> str:
    ctx.data["decision"] = "approved"
    return "approved automatically"


def manual_review(ctx: StepContext[Application]) -> str:
    ctx.data["decision"] = "approved" if ctx.data["score"] >= 500 else "declined"
    return f"reviewed by an underwriter: {ctx.data['decision']}"


def second_signature(ctx: StepContext[Application]) -> str:
    return "countersigned by the branch manager"


def notify(ctx: StepContext[Application]) -> str:
    return f"{ctx.input['applicant']}: {ctx.data['decision']}"


def is_small_and_safe(ctx: StepContext[Application]) -> bool:
    return ctx.input["amount"] <= 10_000 and ctx.data["score"] >= 650


def needs_countersign(ctx: StepContext[Application]) -> bool:
    return ctx.data["decision"] == "approved" and ctx.input["amount"] > 50_000


loan_flow = (
    create_workflow("loan-application")
    .input(Application)
    .step("score", score)
    .step("auto-approve", auto_approve, when=is_small_and_safe)
    .step("manual-review", manual_review, when=lambda ctx: "decision" not in ctx.data)
    .step("second-signature", second_signature, when=needs_countersign)
    .step("notify", notify)
    .build()
)

CASES: list[tuple[Application, set[str]]] = [
    # (application, the steps that must be skipped)
    ({"applicant": "Ada", "amount": 5_000, "income": 90_000}, {"manual-review", "second-signature"}),
    ({"applicant": "Grace", "amount": 20_000, "income": 60_000}, {"auto-approve", "second-signature"}),
    ({"applicant": "Linus", "amount": 80_000, "income": 200_000}, {"auto-approve"}),
]


async def main() -> None:
    async with FluxEngine() as engine:
        engine.on("step_skip", lambda event: print(f"  skip {event.step}"))
        for application, expected_skips in CASES:
            print(f"{application['applicant']} asks for {application['amount']}")
            result = await engine.execute(loan_flow, application)
            skipped = {record.step for record in result.history if record.status == "skipped"}
            for step, output in result.outputs.items():
                print(f"  ran  {step}: {output}")
            if result.status != "completed" or skipped != expected_skips:
                sys.exit(f"unexpected outcome: status {result.status}, skipped {sorted(skipped)}")
            # The predicate's result is part of the record: a resume reads it, never re-evaluates.
            conditions = {r.step: r.condition for r in result.history if r.condition is not None}
            print(f"  recorded conditions: {conditions}")
    print("all branches went the expected way")


if __name__ == "__main__":
    asyncio.run(main())
