"""A saga: book a flight, a hotel and a car; when the car fails, undo the rest, newest first.

Each booking step names a ``compensate`` handler. When a step fails for good, flux runs the
compensations of the steps that completed, newest first, and the run ends ``rolled_back``.
The failed step itself is not compensated: it never completed.

Run it from the root of a checkout (the first command sets up .venv if needed):

    python3 dev.py run examples/saga_trip_booking.py
    .venv/bin/python examples/saga_trip_booking.py
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any

from flux import FluxEngine, NonRetryableError, StepContext, create_workflow
from flux.events import Event

booked: dict[str, str] = {}  # what the pretend travel agencies hold right now
undone: list[str] = []  # compensations, in the order they ran


def book(kind: str) -> Callable[[StepContext[Any]], str]:
    def handler(ctx: StepContext[Any]) -> str:
        reference = f"{kind.upper()}-{ctx.run_id[:6]}"
        booked[kind] = reference
        print(f"  booked {kind}: {reference}")
        return reference

    return handler


def cancel(kind: str) -> Callable[[StepContext[Any]], None]:
    def handler(ctx: StepContext[Any]) -> None:
        reference = booked.pop(kind)
        assert reference == ctx.outputs[ctx.step]  # the compensation sees the step's output
        undone.append(kind)
        print(f"  cancelled {kind}: {reference}")

    return handler


def book_car(ctx: StepContext[Any]) -> str:
    # NonRetryableError fails the step at once; any other retryable error would be retried first.
    raise NonRetryableError("no cars left in Lisbon")


trip_flow = (
    create_workflow("trip-booking")
    .step("flight", book("flight"), compensate=cancel("flight"))
    .step("hotel", book("hotel"), compensate=cancel("hotel"))
    .step("car", book_car, compensate=cancel("car"))
    .build()
)


def show(event: Event) -> None:
    if event.name in ("step_error", "rollback_start", "rollback_complete", "workflow_error"):
        fields = ("step", "steps", "succeeded", "status")
        details = {name: getattr(event, name) for name in fields if hasattr(event, name)}
        print(f"  event {event.name} {details}")


async def main() -> None:
    async with FluxEngine() as engine:
        engine.on("*", show)
        print("booking a trip to Lisbon")
        result = await engine.execute(trip_flow, {"traveller": "Ada", "city": "Lisbon"})

    statuses = {record.step: record.status.value for record in result.history}
    print(f"run {result.status}; steps: {statuses}")
    if result.error is not None:
        print(f"error: {result.error.type}: {result.error.message}")
    expected = {"flight": "compensated", "hotel": "compensated", "car": "failed"}
    if result.status != "rolled_back" or statuses != expected or undone != ["hotel", "flight"] or booked:
        sys.exit(f"unexpected outcome: {result.status} {statuses} undone={undone} still booked={booked}")
    print("everything was rolled back, newest first: " + " then ".join(undone))


if __name__ == "__main__":
    asyncio.run(main())
