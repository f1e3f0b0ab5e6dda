"""Human approval: a run waits, durably, for a manager's decision, then goes on.

An expense report needs a manager's approval. The workflow reaches its ``approval`` step
and suspends: the run is stored as ``suspended`` and holds no memory or task while it waits,
for minutes or days. The decision arrives with ``engine.signal(run_id, "decision", payload)``;
the payload becomes the step's output and a worker resumes the run.

To show that nothing lives in memory, the process that starts the runs closes its engine, and
a second engine on the same SQLite file (think: the same service after a deploy) receives the
decisions and finishes the runs with a worker.

Run it from the root of a checkout (the first command sets up .venv if needed):

    python3 dev.py run examples/human_approval.py
    .venv/bin/python examples/human_approval.py
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

from flux import FluxEngine, NonRetryableError, StepContext, create_workflow
from flux.storage import SQLiteStorage


def check(ctx: StepContext[Any]) -> str:
    if ctx.input["amount"] <= 0:
        raise NonRetryableError("an expense must be a positive amount")
    return "sent to the manager"


def approved(ctx: StepContext[Any]) -> bool:
    return bool(ctx.outputs["approval"]["approved"])


def pay(ctx: StepContext[Any]) -> str:
    decision = ctx.outputs["approval"]
    print(f"  paid {ctx.input['amount']} EUR to {ctx.input['employee']} (approved by {decision['by']})")
    return f"PAY-{ctx.run_id[:6]}"


def tell(ctx: StepContext[Any]) -> str:
    outcome = "paid" if "pay" in ctx.outputs else "rejected: " + ctx.outputs["approval"]["note"]
    print(f"  told {ctx.input['employee']}: {outcome}")
    return outcome


expense_flow = (
    create_workflow("expense-approval")
    .step("check", check)
    # Suspends until a "decision" signal arrives; fails with WaitTimeoutError after 3 days.
    .wait_for_signal("approval", signal="decision", timeout=timedelta(days=3))
    .step("pay", pay, when=approved)
    .step("tell", tell)
)

workflows = [expense_flow]  # what `flux --app examples.human_approval` knows

REPORTS = [
    {"employee": "ada", "amount": 1200},
    {"employee": "linus", "amount": 900},
]
DECISIONS = [
    {"approved": True, "by": "grace", "note": "conference trip"},
    {"approved": False, "by": "grace", "note": "not a business expense"},
]


async def submit(db: Path) -> list[str]:
    """The web request: start each run; it runs until it waits for the manager."""
    async with FluxEngine(storage=SQLiteStorage(db)) as engine:
        run_ids = []
        for report in REPORTS:
            result = await engine.execute(expense_flow, report)
            print(f"{report['employee']}'s report: run {result.id} is {result.status}")
            run_ids.append(result.id)
        return run_ids


async def decide(db: Path, run_ids: list[str]) -> list[str]:
    """Later, another engine: the manager decides, a worker resumes the runs."""
    async with FluxEngine(storage=SQLiteStorage(db), workflows=[expense_flow]) as engine:
        engine.on(
            "signal_received", lambda event: print(f"signal {event.signal!r} for run {event.run_id}")
        )
        async with engine.worker(concurrency=4):
            for run_id, decision in zip(run_ids, DECISIONS, strict=True):
                await engine.signal(run_id, "decision", decision)
            results = [await engine.wait_result(run_id, timeout=30) for run_id in run_ids]
    for result in results:
        print(f"run {result.id} {result.status}: {result.outputs['tell']}")
    return [result.outputs["tell"] for result in results]


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(os.environ.get("FLUX_DB") or Path(tmp) / "approvals.db")
        run_ids = await submit(db)
        outcomes = await decide(db, run_ids)
    if outcomes != ["paid", "rejected: not a business expense"]:
        sys.exit(f"unexpected outcomes: {outcomes}")
    print("both reports were decided by the manager and finished by the worker")


if __name__ == "__main__":
    asyncio.run(main())
