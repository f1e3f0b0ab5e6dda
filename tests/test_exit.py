"""A process that leaves an engine or its storage open still exits, and is told to use ``async with``.

Each case runs a real script in a fresh interpreter with a timeout: a hang fails the test instead
of stalling the suite.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

LEFT_OPEN = """
import asyncio
import sys

from flux import FluxEngine, create_workflow
from flux.storage import SQLiteStorage


async def main() -> None:
    engine = FluxEngine(SQLiteStorage("flux.db"))      # no async with, no close()
    result = await engine.execute(create_workflow("w").step("a", lambda ctx: 1))
    print(result.status, flush=True)
    if sys.argv[1] == "raise":
        raise RuntimeError("the caller failed after the run")


asyncio.run(main())
"""

STORAGE_LEFT_OPEN = """
import asyncio

from flux.storage import SQLiteStorage


async def main() -> None:
    storage = SQLiteStorage("flux.db")
    await storage.init()
    print(await storage.list(), flush=True)


asyncio.run(main())
"""


ABANDONED_THREAD = """
import asyncio
import threading

from flux import FluxEngine, create_workflow

never = threading.Event()


def stuck(ctx):
    never.wait()  # a sync call that never returns: abandoned at the step's timeout


async def main() -> None:
    async with FluxEngine() as engine:
        result = await engine.execute(create_workflow("w").step("stuck", stuck, timeout=0.1, retries=0))
    print(result.status, result.error.type, flush=True)


asyncio.run(main())
"""


def run_script(
    tmp_path: Path, code: str, *args: str, python_flags: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "script.py"
    script.write_text(code, encoding="utf-8")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    return subprocess.run(
        [sys.executable, *python_flags, str(script), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,  # the bug this guards against is a process that never exits
    )


def test_an_engine_left_open_on_sqlite_lets_the_process_exit(tmp_path: Path) -> None:
    done = run_script(tmp_path, LEFT_OPEN, "return")
    assert (done.returncode, done.stdout) == (0, "completed\n"), done.stderr
    assert (tmp_path / "flux.db").exists()


def test_a_caller_that_fails_with_the_engine_open_exits_with_its_error(tmp_path: Path) -> None:
    done = run_script(tmp_path, LEFT_OPEN, "raise")
    assert done.returncode == 1
    assert done.stdout == "completed\n"
    assert "RuntimeError: the caller failed after the run" in done.stderr


def test_a_storage_left_open_lets_the_process_exit(tmp_path: Path) -> None:
    done = run_script(tmp_path, STORAGE_LEFT_OPEN)
    assert (done.returncode, done.stdout) == (0, "[]\n"), done.stderr


@pytest.mark.parametrize("code", [LEFT_OPEN, STORAGE_LEFT_OPEN], ids=["engine", "storage"])
def test_leaving_storage_open_warns_to_use_async_with(tmp_path: Path, code: str) -> None:
    done = run_script(tmp_path, code, "return", python_flags=("-W", "always::ResourceWarning"))
    assert done.returncode == 0, done.stderr
    assert "ResourceWarning: SQLiteStorage('flux.db', table_prefix='flux_') was never closed" in done.stderr
    assert "Use `async with FluxEngine(storage=...) as engine:`" in done.stderr


def test_a_sync_step_abandoned_at_its_timeout_does_not_hold_the_process(tmp_path: Path) -> None:
    done = run_script(tmp_path, ABANDONED_THREAD)
    assert (done.returncode, done.stdout) == (0, "failed StepTimeoutError\n"), done.stderr
