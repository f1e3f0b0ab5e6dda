"""What the SIGKILL crash tests share: reading the external ledger and killing the process.

The workflow scripts under tests/crash_scripts and tests/control_scripts append one row per
step effect to a ledger (a SQLite file of their own); the tests watch it from outside.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path


def ledger_rows(path: Path) -> list[tuple[str, str]]:
    """Every (run id, step) effect recorded so far."""
    if not path.exists():
        return []
    try:
        with sqlite3.connect(path, timeout=30) as db:
            return list(db.execute("SELECT run_id, step FROM ledger"))
    except sqlite3.OperationalError:  # the table is not created yet
        return []


def ledger_count(path: Path) -> int:
    """How many effects are recorded so far."""
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path, timeout=30) as db:
            return int(db.execute("SELECT count(*) FROM ledger").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def kill_when_ledger_reaches(
    proc: subprocess.Popen[bytes], ledger: Path, target: int, limit: float = 120
) -> bool:
    """Poll the other process's ledger (bounded); SIGKILL it once ``target`` rows exist.

    Returns False when the process finished by itself first.
    """
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if ledger_count(ledger) >= target:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.002)  # polling a separate process; nothing in-process to wait on
    raise AssertionError(f"the workflow process made no progress for {limit:g} s")


def finish(proc: subprocess.Popen[bytes]) -> None:
    """Wait for a process to end by itself and check it succeeded."""
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
