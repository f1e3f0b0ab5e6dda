"""Cron schedules: slot maths, exactly-once firing across workers, catch-up after downtime.

A FakeClock drives the workers: a slot fires when the clock reaches it. Bad inputs tried: a
malformed cron expression, an unknown time zone, an unknown catch_up, an empty name, a
non-workflow, duplicate schedule names, and schedules on an app without a worker.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from server_support import serving

from flux import FluxEngine, Schedule, create_workflow
from flux.schedule import SLOT_LABEL, due_slots
from flux.server import create_app
from flux.storage import SQLiteStorage
from flux.testing import FakeClock

START = datetime(2030, 1, 1, tzinfo=UTC)
FIVE = timedelta(minutes=5)


def at(minutes: int) -> datetime:
    return START + timedelta(minutes=minutes)


class Done:
    """Counts calls (of a step, or of an event subscriber); ``until(n)`` waits for the n-th."""

    def __init__(self) -> None:
        self.count = 0
        self._changed = asyncio.Condition()

    async def hit(self, ctx_or_event: object) -> None:
        async with self._changed:
            self.count += 1
            self._changed.notify_all()

    async def until(self, count: int) -> None:
        async with asyncio.timeout(20), self._changed:
            await self._changed.wait_for(lambda: self.count >= count)


@pytest.fixture
def done() -> Done:
    return Done()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=START)


def engine_on(path: Path, clock: FakeClock, done: Done) -> FluxEngine:
    """An engine on the shared SQLite file whose finished runs ``done`` counts.

    Tests wait for a run to finish before moving the clock again: jumping minutes while a run
    is in flight would expire its lease and hand it to the other worker mid-step.
    """
    engine = FluxEngine(storage=SQLiteStorage(path), clock=clock, poll_interval=0.05)
    engine.on("workflow_complete", done.hit)
    return engine


async def slots_of(engine: FluxEngine, schedule: str) -> list[str]:
    runs = await engine.list(labels={"flux.schedule": schedule})
    return sorted(run.labels[SLOT_LABEL] for run in runs)


def iso(minutes: int) -> str:
    return at(minutes).isoformat()


# --- the pure slot maths ------------------------------------------------------------------


def schedule(catch_up: str = "latest", cron: str = "*/5 * * * *", **kwargs: Any) -> Schedule:
    flow = create_workflow("tick").step("noop", lambda ctx: None)
    return Schedule("every-five", flow, cron=cron, catch_up=catch_up, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("catch_up", "last", "now", "expected"),
    [
        ("latest", 0, 4, []),
        ("latest", 0, 5, [5]),
        ("none", 0, 5, [5]),
        ("all", 0, 5, [5]),
        ("latest", 0, 30, [30]),
        ("all", 0, 30, [5, 10, 15, 20, 25, 30]),
        ("none", 0, 30, [30]),  # the newest slot is on time: only the missed ones are skipped
        ("none", 0, 32, []),  # 00:30 is two minutes late: missed, skipped
        ("latest", 0, 32, [30]),
        ("all", 0, 32, [5, 10, 15, 20, 25, 30]),
        ("all", 5, 5, []),
    ],
)
def test_due_slots(catch_up: str, last: int, now: int, expected: list[int]) -> None:
    assert due_slots(schedule(catch_up), at(last), at(now)) == [at(m) for m in expected]


def test_slots_follow_the_time_zone() -> None:
    nine_in_paris = schedule(cron="0 9 * * *", timezone="Europe/Paris")
    slots = nine_in_paris.slots_after(START, START + timedelta(days=2))
    assert [slot.hour for slot in slots] == [8, 8]  # 09:00 CET is 08:00 UTC in January
    assert all(slot.tzinfo is UTC for slot in slots)


def test_key_and_labels_name_the_schedule_and_slot() -> None:
    every = schedule()
    assert every.key(at(5)) == f"schedule:every-five:{iso(5)}"
    assert every.labels(at(5)) == {"flux.schedule": "every-five", "flux.slot": iso(5)}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cron": "every five minutes"}, "not a cron expression"),
        ({"cron": "61 * * * *"}, "not a cron expression"),
        ({"timezone": "Mars/Olympus"}, "time zone"),
        ({"catch_up": "some"}, "catch_up"),
    ],
)
def test_bad_schedules_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        schedule(**kwargs)


def test_bad_names_and_workflows_are_refused() -> None:
    flow = create_workflow("tick").step("noop", lambda ctx: None)
    with pytest.raises(ValueError, match="name"):
        Schedule("", flow, cron="* * * * *")
    with pytest.raises(TypeError, match="Workflow"):
        Schedule("x", "tick", cron="* * * * *")  # type: ignore[arg-type]
    engine = FluxEngine()
    twice = [Schedule("x", flow, cron="* * * * *"), Schedule("x", flow, cron="*/2 * * * *")]
    with pytest.raises(ValueError, match="two schedules are named"):
        engine.worker(schedules=twice)
    with pytest.raises(ValueError, match="worker"):
        create_app(engine, schedules=twice[:1], worker=False)


# --- firing through workers ---------------------------------------------------------------


@pytest.fixture
async def two_engines(
    tmp_path: Path, clock: FakeClock, done: Done
) -> AsyncIterator[tuple[FluxEngine, FluxEngine]]:
    path = tmp_path / "flux.db"
    async with engine_on(path, clock, done) as one, engine_on(path, clock, done) as two:
        yield one, two


async def test_two_workers_on_one_database_fire_each_of_ten_slots_once(
    two_engines: tuple[FluxEngine, FluxEngine], clock: FakeClock, done: Done
) -> None:
    calls = Done()
    flow = create_workflow("report").step("send", calls.hit)
    every = Schedule("report", flow, cron="*/5 * * * *")
    one, two = two_engines
    async with one.worker(schedules=[every]), two.worker(schedules=[every]):
        for slot in range(1, 11):
            await clock.advance(FIVE)
            await done.until(slot)
    assert done.count == 10 and calls.count == 10
    assert await slots_of(one, "report") == [iso(5 * m) for m in range(1, 11)]
    assert len(await two.list()) == 10


async def run_with_gap(
    path: Path, clock: FakeClock, done: Done, catch_up: str, gap_minutes: int, expected_runs: int
) -> list[str]:
    """Fire one slot, stop the worker, let ``gap_minutes`` pass with none running, start a
    new worker (a new process would do the same) and return the fired slots."""
    flow = create_workflow("report").step("send", lambda ctx: None)
    every = Schedule("report", flow, cron="*/5 * * * *", catch_up=catch_up)  # type: ignore[arg-type]
    async with engine_on(path, clock, done) as engine, engine.worker(schedules=[every]):
        await clock.advance(FIVE)
        await done.until(1)
    await clock.advance(timedelta(minutes=gap_minutes))
    async with engine_on(path, clock, done) as engine:
        async with engine.worker(schedules=[every]):
            await done.until(expected_runs)
            await clock.advance(timedelta(minutes=5 - clock.now().minute % 5))  # the next slot: on time
            await done.until(expected_runs + 1)
        return await slots_of(engine, "report")


async def test_catch_up_all_fires_every_missed_slot(tmp_path: Path, clock: FakeClock, done: Done) -> None:
    slots = await run_with_gap(tmp_path / "flux.db", clock, done, "all", 20, 5)
    assert slots == [iso(m) for m in (5, 10, 15, 20, 25, 30)]


async def test_catch_up_latest_fires_one_run_for_the_missed_slots(
    tmp_path: Path, clock: FakeClock, done: Done
) -> None:
    slots = await run_with_gap(tmp_path / "flux.db", clock, done, "latest", 22, 2)
    assert slots == [iso(m) for m in (5, 25, 30)]


async def test_catch_up_none_skips_the_missed_slots(tmp_path: Path, clock: FakeClock, done: Done) -> None:
    slots = await run_with_gap(tmp_path / "flux.db", clock, done, "none", 22, 1)
    assert slots == [iso(m) for m in (5, 30)]


async def test_a_schedule_that_never_fired_missed_nothing(
    tmp_path: Path, clock: FakeClock, done: Done
) -> None:
    await clock.advance(timedelta(hours=3))
    flow = create_workflow("report").step("send", lambda ctx: None)
    every = Schedule("fresh", flow, cron="*/5 * * * *", catch_up="all")
    async with engine_on(tmp_path / "flux.db", clock, done) as engine:
        async with engine.worker(schedules=[every]):
            await clock.advance(FIVE)
            await done.until(1)
        assert await slots_of(engine, "fresh") == [iso(185)]


class SkipLog(logging.Handler):
    """Sets ``skipped`` when the scheduler logs that it skipped a slot."""

    def __init__(self) -> None:
        super().__init__()
        self.skipped = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "skips slot" in record.getMessage():
            self.skipped.set()


async def test_overlap_false_skips_slots_while_the_previous_run_is_unfinished(
    tmp_path: Path, clock: FakeClock, done: Done
) -> None:
    arrived = Done()
    flow = (
        create_workflow("sync").step("arrive", arrived.hit).wait_for_signal("go").step("send", lambda ctx: 1)
    )
    every = Schedule("sync", flow, cron="*/5 * * * *", overlap=False)
    handler = SkipLog()
    logger = logging.getLogger("flux.schedule")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        async with engine_on(tmp_path / "flux.db", clock, done) as engine, engine.worker(schedules=[every]):
            await clock.advance(FIVE)
            await arrived.until(1)
            [first] = await engine.list()
            await clock.advance(FIVE)
            async with asyncio.timeout(20):
                await handler.skipped.wait()
            await engine.signal(first.id, "go")
            await done.until(1)
            await clock.advance(FIVE)
            await arrived.until(2)  # the next slot's run starts once the previous one finished
            assert await slots_of(engine, "sync") == [iso(5), iso(15)]
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)


def test_import_flux_needs_neither_croniter_nor_starlette() -> None:
    script = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"croniter", "starlette", "uvicorn"}:
            raise ImportError(f"blocked {name}")
        return None
sys.meta_path.insert(0, Block())
import flux
flux.create_workflow("x").step("s", lambda ctx: 1).build()
try:
    import flux.server
except ImportError as exc:
    print("server:", exc)
try:
    flux.Schedule("s", flux.create_workflow("x").step("s", lambda ctx: 1), cron="* * * * *")
except ImportError as exc:
    print("schedule:", exc)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert "server: flux.server needs the server extra: pip install 'flux-workflow[server]'" in result.stdout
    assert "schedule: flux.Schedule needs croniter: pip install 'flux-workflow[server]'" in result.stdout


async def test_each_scheduled_run_is_driven_once_on_memory_storage(clock: FakeClock, done: Done) -> None:
    # MemoryStorage never yields to the loop: a run the worker took on one pass has not started
    # by the next pass, and must not be taken twice.
    starts: list[str] = []
    flow = create_workflow("report").step("send", lambda ctx: None)
    engine = FluxEngine(clock=clock)
    engine.on("workflow_complete", done.hit)
    engine.on("workflow_start", lambda event: starts.append(event.run_id))
    async with engine, engine.worker(schedules=[Schedule("r", flow, cron="*/5 * * * *")]):
        for slot in range(1, 4):
            await clock.advance(FIVE)
            await done.until(slot)
        runs = await engine.list()
    assert sorted(starts) == sorted(run.id for run in runs)
    assert [run.status for run in runs] == ["completed"] * 3


async def test_create_app_fires_its_schedules(tmp_path: Path, clock: FakeClock, done: Done) -> None:
    flow = create_workflow("report").step("send", lambda ctx: "sent")
    engine = engine_on(tmp_path / "flux.db", clock, done)
    app = create_app(engine, schedules=[Schedule("app-report", flow, cron="*/5 * * * *")])
    async with serving(app) as http:
        assert [w["name"] for w in (await http.get("/api/workflows")).json()["workflows"]] == ["report"]
        await clock.advance(FIVE)
        await done.until(1)
        runs = (await http.get("/api/runs", params={"label": "flux.schedule:app-report"})).json()["runs"]
        assert [run["labels"]["flux.slot"] for run in runs] == [iso(5)]
        assert runs[0]["status"] == "completed"
