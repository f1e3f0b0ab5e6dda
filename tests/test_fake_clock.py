"""flux.testing.FakeClock: time that moves only when told to."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from flux import Clock
from flux.testing import FakeClock

START = datetime(2030, 1, 1, tzinfo=UTC)


def test_is_a_clock_and_starts_where_told() -> None:
    clock = FakeClock(start=datetime(2031, 6, 1, 12, tzinfo=UTC))
    assert isinstance(clock, Clock)
    assert clock.now() == datetime(2031, 6, 1, 12, tzinfo=UTC)
    assert FakeClock().now().tzinfo is not None


def test_rejects_a_naive_start() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        FakeClock(start=datetime(2030, 1, 1))


async def test_auto_advance_sleep_moves_time_and_records_the_duration() -> None:
    clock = FakeClock(start=START)
    await clock.sleep(5)
    await clock.sleep(0.25)
    await clock.sleep(-3)  # a negative sleep is no sleep
    assert clock.now() == START + timedelta(seconds=5.25)
    assert clock.slept == [5.0, 0.25, 0.0]


async def test_manual_sleep_waits_until_the_clock_is_advanced() -> None:
    clock = FakeClock(start=START, auto_advance=False)
    sleeper = asyncio.create_task(clock.sleep(10))
    await clock.wait_for_timers()
    assert clock.pending_timers == 1
    await clock.advance(9.5)
    assert not sleeper.done()
    await clock.advance(0.5)
    assert sleeper.done()
    assert clock.now() == START + timedelta(seconds=10)
    assert clock.pending_timers == 0


async def test_advance_fires_due_timers_in_time_order() -> None:
    clock = FakeClock(start=START, auto_advance=False)
    woke: list[tuple[str, datetime]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append((name, clock.now()))

    tasks = [asyncio.create_task(sleeper(name, s)) for name, s in (("c", 30), ("a", 10), ("b", 20))]
    await clock.wait_for_timers(3)
    await clock.advance(timedelta(seconds=25))
    assert woke == [("a", START + timedelta(seconds=10)), ("b", START + timedelta(seconds=20))]
    assert clock.now() == START + timedelta(seconds=25)
    await clock.advance(5)
    await asyncio.gather(*tasks)
    assert [name for name, _ in woke] == ["a", "b", "c"]


async def test_cannot_go_back_in_time() -> None:
    with pytest.raises(ValueError, match="back in time"):
        await FakeClock().advance(-1)


async def test_timeout_cancels_its_body_when_the_clock_passes_it() -> None:
    clock = FakeClock(start=START)
    cancelled = asyncio.Event()

    async def body() -> None:
        try:
            await asyncio.Event().wait()  # never set: only the deadline ends this
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def guarded() -> bool:
        deadline = clock.timeout(3)
        with pytest.raises(TimeoutError):
            async with deadline:
                await body()
        return deadline.expired()

    task = asyncio.create_task(guarded())
    await clock.wait_for_timers()
    await clock.advance(2.9)
    assert not task.done()
    await clock.advance(0.1)
    assert await task is True
    assert cancelled.is_set()


async def test_timeout_that_is_not_reached_leaves_the_body_alone() -> None:
    clock = FakeClock(start=START)
    deadline = clock.timeout(3)
    async with deadline:
        await asyncio.sleep(0)
    assert not deadline.expired()
    assert clock.pending_timers == 0  # the finished deadline's timer was withdrawn
    await clock.advance(10)  # passing the old due time must not disturb anything
    assert not deadline.expired()


async def test_timeout_none_never_fires() -> None:
    clock = FakeClock(start=START)
    deadline = clock.timeout(None)
    async with deadline:
        assert clock.pending_timers == 0
        await clock.advance(10_000)
    assert not deadline.expired()


async def test_auto_advance_sleep_fires_a_pending_deadline_it_passes() -> None:
    """A sleep that auto-advances past another task's deadline fires that deadline."""
    clock = FakeClock(start=START)

    async def guarded() -> bool:
        deadline = clock.timeout(1)
        try:
            async with deadline:
                await asyncio.Event().wait()
        except TimeoutError:
            return deadline.expired()
        return False

    task = asyncio.create_task(guarded())
    await clock.wait_for_timers()
    await clock.sleep(5)
    assert await task is True
