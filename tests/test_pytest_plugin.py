"""The flux pytest plugin, used by test modules of their own (pytester runs pytest in pytest)."""

from __future__ import annotations

import pytest

USER_TESTS = """
import pytest

from flux import FluxEngine, create_workflow
from flux.storage import MemoryStorage, SQLiteStorage
from flux.testing import EventRecorder, FakeClock

FLOW = create_workflow("nightly").step("a", lambda ctx: 1).sleep("nap", 3).step("b", lambda ctx: 2)


async def test_the_engine_runs_on_the_fake_clock(
    flux_engine: FluxEngine, fake_clock: FakeClock, flux_events: EventRecorder
) -> None:
    start = fake_clock.now()
    result = await flux_engine.execute(FLOW)
    assert result.status == "completed"
    assert flux_engine.clock is fake_clock
    assert (fake_clock.now() - start).total_seconds() == 3
    assert flux_events.names[0] == "workflow_start"
    assert flux_events.names[-1] == "workflow_complete"


async def test_the_backend(flux_engine: FluxEngine, request: pytest.FixtureRequest) -> None:
    expected = SQLiteStorage if request.config.getoption("flux_sqlite") else MemoryStorage
    assert type(flux_engine.storage) is expected
    result = await flux_engine.execute(FLOW)
    assert [r.status for r in await flux_engine.list()] == [result.status]
"""

CONFIG = """
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
"""


@pytest.mark.parametrize("flags", [[], ["--flux-sqlite"]], ids=["memory", "sqlite"])
def test_a_user_test_module_gets_the_fixtures(pytester: pytest.Pytester, flags: list[str]) -> None:
    pytester.makeini(CONFIG)
    pytester.makepyfile(test_user=USER_TESTS)
    outcome = pytester.runpytest_subprocess("-q", *flags)
    outcome.assert_outcomes(passed=2)


def test_sqlite_runs_leave_a_database_file(pytester: pytest.Pytester) -> None:
    pytester.makeini(CONFIG)
    pytester.makepyfile(
        test_file="""
from pathlib import Path

async def test_it(flux_engine, tmp_path: Path) -> None:
    from flux import create_workflow
    await flux_engine.execute(create_workflow("f").step("a", lambda ctx: 1))
    assert (tmp_path / "flux.db").exists()
"""
    )
    pytester.runpytest_subprocess("-q", "--flux-sqlite").assert_outcomes(passed=1)


def test_the_option_is_listed_in_help(pytester: pytest.Pytester) -> None:
    outcome = pytester.runpytest_subprocess("--help")
    outcome.stdout.fnmatch_lines(["*--flux-sqlite*"])
