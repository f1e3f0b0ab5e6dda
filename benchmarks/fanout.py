"""Fan-out speed: a parallel group of async branches, and a 10,000-item map on SQLite.

    .venv/bin/python benchmarks/fanout.py [--repeat 3] [--branches 100] [--items 10000] [--dir /some/disk]

Printed, each the median of ``--repeat`` rounds:

- a parallel group of ``--branches`` async branches, each awaiting a 10 ms sleep, on
  MemoryStorage and on SQLiteStorage: the wall time against the 10 ms ideal (target: well
  under a second; a slow branch never holds back the others);
- a map of ``--items`` items on SQLiteStorage (concurrency 16, then batches of 100): items per
  second against the sequential durable step rate measured in the same run (one run whose
  ``--items // 10`` no-op steps follow each other, each one checkpointed).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from flux import FluxEngine, MemoryStorage, StepContext, create_workflow
from flux.storage import SQLiteStorage, Storage

SLEEP = 0.010


async def sleepy(ctx: StepContext[Any]) -> None:
    await asyncio.sleep(SLEEP)


async def noop(ctx: StepContext[Any]) -> None:
    return None


async def item(ctx: StepContext[Any], value: int) -> int:
    return value


async def timed(storage: Storage, workflow: Any) -> float:
    async with FluxEngine(storage) as engine:
        started = time.perf_counter()
        result = await engine.execute(workflow)
        elapsed = time.perf_counter() - started
    assert result.status == "completed", result.error
    return elapsed


def measure(make: Callable[[int], Storage], workflow: Any) -> Callable[[int], Awaitable[float]]:
    """Round ``i``: run ``workflow`` once on a fresh ``make(i)`` storage; its wall time."""
    return lambda i: timed(make(i), workflow)


def storage_in(root: Path, name: str) -> Callable[[int], Storage]:
    """A fresh SQLite file per round."""
    return lambda i: SQLiteStorage(root / f"{name}-{i}.db")


def median(rounds: int, measure: Callable[[int], Awaitable[float]]) -> float:
    async def run() -> list[float]:
        return [await measure(i) for i in range(rounds)]

    return statistics.median(asyncio.run(run()))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3, help="rounds to take the median of (default 3)")
    parser.add_argument("--branches", type=int, default=100, help="branches of the parallel group")
    parser.add_argument("--items", type=int, default=10_000, help="items of the map")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the databases")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        group = create_workflow("fanout").parallel(
            "group", *(create_workflow(f"b{i}").step(f"sleep-{i}", sleepy) for i in range(args.branches))
        )
        print(f"parallel group: {args.branches} async branches, each awaiting {SLEEP * 1000:.0f} ms")
        for label, make in (
            ("MemoryStorage", lambda i: MemoryStorage()),
            ("SQLiteStorage", storage_in(root, "group")),
        ):
            wall = median(args.repeat, measure(make, group))
            print(f"  {label:14} {wall * 1000:7.1f} ms wall  ({wall / SLEEP:.1f}x the 10 ms ideal)")

        steps = max(args.items // 10, 1)
        chain = create_workflow("chain")
        for index in range(steps):
            chain = chain.step(f"s{index}", noop)
        sequential = median(args.repeat, measure(storage_in(root, "chain"), chain))
        step_rate = steps / sequential
        print(f"\nmap of {args.items} items on SQLiteStorage")
        print(f"  baseline: sequential durable steps  {step_rate:9,.0f} steps/s  ({steps} steps in one run)")
        for label, name, concurrency, batch_size in (
            ("one record per item, 16 at once", "items", 16, None),
            ("batches of 100, 4 at once", "batched", 4, 100),
        ):
            mapped = create_workflow("map").map(
                "m",
                item,
                over=lambda ctx: list(range(args.items)),
                concurrency=concurrency,
                batch_size=batch_size,
            )
            wall = median(args.repeat, measure(storage_in(root, name), mapped))
            rate = args.items / wall
            print(f"  {label:34} {rate:9,.0f} items/s  ({rate / step_rate:.2f}x the sequential step rate)")


if __name__ == "__main__":
    main()
