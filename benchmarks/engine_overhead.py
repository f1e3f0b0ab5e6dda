"""How much time the engine adds to each step, against awaiting the same handlers in a plain loop.

Runs a 10-step workflow of no-op async handlers 2,000 times on MemoryStorage (20,000 steps), and
awaits the same 20,000 no-op handlers in a plain loop in the same process. Prints the engine's
overhead per step in microseconds and the ratio of the two times. Target: <= 10 us per step with
no subscribers. It also runs the same chain with a construct appended that is never reached (two
parallel groups that are only each other's failure route): one visit loop serves both, so the
time per step must stay within 1.1x of the plain chain's. Each figure is the best of
``--repeat`` rounds, to keep scheduler noise out.

    python benchmarks/engine_overhead.py
    python benchmarks/engine_overhead.py --profile     # where the time goes (cProfile)
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats
import time
from collections.abc import Awaitable, Callable
from typing import Any

from flux import FluxEngine, MemoryStorage, StepContext, Workflow, create_workflow

STEPS = 10
TARGET_US = 10.0
SHAPE_RATIO_TARGET = 1.1


async def noop(ctx: StepContext[Any]) -> None:
    return None


def workflow(steps: int = STEPS, construct: bool = False) -> Workflow[Any]:
    builder = create_workflow("overhead")
    for i in range(steps):
        builder = builder.step(f"s{i}", noop)
    if construct:  # never reached: each group is only the other's on_failure route
        spare = create_workflow("spare").step("spare-step", noop)
        other = create_workflow("other").step("other-step", noop)
        builder = builder.parallel("spare-group", spare, on_failure="other-group").parallel(
            "other-group", other, on_failure="spare-group"
        )
    return builder.build()


async def plain_loop(runs: int, steps: int) -> float:
    """Await the same handlers with nothing around them; returns seconds."""
    handlers = [noop] * steps
    ctx: Any = object()
    started = time.perf_counter()
    for _ in range(runs):
        for handler in handlers:
            await handler(ctx)
    return time.perf_counter() - started


async def engine_runs(runs: int, plan: Workflow[Any], subscribe: bool = False) -> float:
    """Execute ``plan`` ``runs`` times on a fresh engine; returns seconds."""
    async with FluxEngine(MemoryStorage()) as engine:
        if subscribe:
            engine.on("*", lambda event: None)
        await engine.execute(plan)  # warm up: first-run caches
        started = time.perf_counter()
        for _ in range(runs):
            result = await engine.execute(plan)
        elapsed = time.perf_counter() - started
        assert result.status == "completed", result
    return elapsed


async def best_of(repeat: int, measure: Callable[[], Awaitable[float]]) -> float:
    times = []
    for _ in range(repeat):
        gc.collect()
        times.append(await measure())
    return min(times)


async def main(runs: int, repeat: int, profile: bool) -> None:
    plan = workflow()
    total_steps = runs * STEPS
    baseline = await best_of(repeat, lambda: plain_loop(runs, STEPS))
    bare = await best_of(repeat, lambda: engine_runs(runs, plan))
    watched = await best_of(repeat, lambda: engine_runs(runs, plan, subscribe=True))

    def overhead(seconds: float) -> float:
        return (seconds - baseline) / total_steps * 1e6

    print(f"{runs} runs x {STEPS} no-op async steps = {total_steps} steps, MemoryStorage, best of {repeat}")
    for label, seconds in [
        ("plain loop", baseline),
        ("engine, no subscribers", bare),
        ("engine, one '*' subscriber", watched),
    ]:
        print(f"  {label + ':':<28} {seconds * 1e3:9.2f} ms  ({seconds / total_steps * 1e6:6.2f} us/step)")
    for label, seconds in [("no subscribers", bare), ("one '*' subscriber", watched)]:
        ratio = seconds / baseline
        print(f"overhead per step, {label + ':':<20} {overhead(seconds):6.2f} us  (ratio {ratio:.0f}x)")
    verdict = "meets" if overhead(bare) <= TARGET_US else "MISSES"
    print(f"target <= {TARGET_US:g} us/step with no subscribers: {verdict}")

    # T(steps) = per_run + steps * per_step: a 1-step plan separates the two.
    single = await best_of(repeat, lambda: engine_runs(runs, workflow(1)))
    per_step = (bare - single) / (runs * (STEPS - 1))
    per_run = single / runs - per_step
    print(
        f"split: {per_step * 1e6:.2f} us per step + {per_run * 1e6:.2f} us per run "
        f"(execute, first and last checkpoint, result), i.e. {per_run / STEPS * 1e6:.2f} us/step "
        f"of the total at {STEPS} steps"
    )

    shaped = await best_of(repeat, lambda: engine_runs(runs, workflow(construct=True)))
    shape_ratio = shaped / bare
    verdict = "meets" if shape_ratio <= SHAPE_RATIO_TARGET else "MISSES"
    print(
        f"chain with an unreachable construct appended: {shaped / total_steps * 1e6:.2f} us/step, "
        f"{shape_ratio:.2f}x the plain chain (target <= {SHAPE_RATIO_TARGET:g}x): {verdict}"
    )

    if profile:
        profiler = cProfile.Profile()
        profiler.enable()
        await engine_runs(runs, plan)
        profiler.disable()
        stats = pstats.Stats(profiler).strip_dirs().sort_stats("tottime")
        print("\nwhere the time goes (cProfile, sorted by own time):")
        stats.print_stats(25)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=2000, help="workflow runs per round (default 2000)")
    parser.add_argument("--repeat", type=int, default=5, help="rounds; the best counts (default 5)")
    parser.add_argument("--profile", action="store_true", help="profile one round of engine runs")
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.repeat, args.profile))
