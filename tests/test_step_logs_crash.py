"""Stored step logs survive a SIGKILL: a real process killed mid-step, then recovered."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from crash_support import finish, kill_when_ledger_reaches

from flux.storage import SQLiteStorage

SCRIPT = Path(__file__).parent / "crash_scripts" / "logging_workflow.py"


def _start(db: Path, ledger: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), str(db), str(ledger)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


@pytest.mark.slow
async def test_lines_logged_before_a_sigkill_are_kept_and_the_resumed_attempt_adds_its_own(
    tmp_path: Path,
) -> None:
    db, ledger = tmp_path / "flux.db", tmp_path / "ledger.db"
    first = _start(db, ledger)
    assert kill_when_ledger_reaches(first, ledger, 1), "the process ended before it could be killed"
    finish(_start(db, ledger))  # recovers the run and completes it

    async with SQLiteStorage(db) as storage:
        run = await storage.load("logged")
    assert run is not None and run.status == "completed"
    lines = {record.step: [(line.level, line.message) for line in record.logs] for record in run.steps}
    pids = [int(found[1]) for _, message in lines["slow"] if (found := re.match(r"pid (\d+)", message))]
    assert lines["first"] == [("info", f"pid {first.pid}: first step")]
    assert lines["slow"] == [
        ("warning", f"pid {first.pid}: before the action"),  # written by the action's checkpoint
        ("warning", f"pid {pids[1]}: before the action"),  # the resumed attempt, in the new process
        ("info", f"pid {pids[1]}: after the action"),
    ]
    assert pids[1] != first.pid
