"""What stored step logs cost: a step that logs a line through ``ctx.log``, against one that does not.

Runs a 10-step workflow of async handlers 1,000 times on MemoryStorage, once with handlers that
call ``ctx.log.info(...)`` once each (the line is kept with the step record; the ``flux.step``
logger itself is left unconfigured, as in most apps) and once with handlers that do not log.
Prints the microseconds each kept line adds and the ratio of the two times. Each figure is the
best of ``--repeat`` rounds.

    python benchmarks/step_logs.py
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from flux import FluxEngine, MemoryStorage, StepContext, Workflow, create_workflow

STEPS = 10


async def quiet(ctx: StepContext[Any]) -> None:
    return None


async def chatty(ctx: StepContext[Any]) -> None:
    ctx.log.info("step %s of run %s", ctx.step, ctx.run_id)


def workflow(handler: Any) -> Workflow[Any]:
    builder = create_workflow("logs")
    for i in range(STEPS):
        builder = builder.step(f"s{i}", handler)
    return builder.build()


async def timed(plan: Workflow[Any], runs: int) -> float:
    async with FluxEngine(MemoryStorage()) as engine:
        await engine.execute(plan)  # warm up
        started = time.perf_counter()
        for _ in range(runs):
            await engine.execute(plan)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    plans = {"no log": workflow(quiet), "one line per step": workflow(chatty)}
    best = {
        name: min(asyncio.run(timed(plan, args.runs)) for _ in range(args.repeat))
        for name, plan in plans.items()
    }
    steps = args.runs * STEPS
    base, logged = best["no log"], best["one line per step"]
    per_step = {name: seconds * 1e6 / steps for name, seconds in best.items()}
    print(f"{steps} steps: " + ", ".join(f"{name} {us:.1f} us/step" for name, us in per_step.items()))
    print(f"each kept line adds {(logged - base) * 1e6 / steps:.1f} us; ratio {logged / base:.2f}")


if __name__ == "__main__":
    main()
