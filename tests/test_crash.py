"""Crash tests: real processes killed with SIGKILL at random points, then restarted.

The script under tests/crash_scripts/ runs a workflow whose steps (sync, async, an action
inside a step, commit steps) each append a row to an external ledger before flux checkpoints
them. The test kills it whenever the ledger has grown by a random amount, restarts it (the new
process calls ``recover()``), and finally checks the guarantees of DESIGN.md: every run
completes, no run is lost, and each step's effect appears once, except for the step in flight
at a kill, which may appear once more per kill.
"""

from __future__ import annotations

import random
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from crash_support import finish, kill_when_ledger_reaches, ledger_rows

pytestmark = pytest.mark.slow  # SIGKILLs and real processes: skipped by `dev.py test --quick`

SCRIPT = Path(__file__).parent / "crash_scripts" / "ledger_workflow.py"
STEPS = ("sync-a", "async-b", "action-c", "commit-d", "data-e", "commit-f")


def _start(db: Path, ledger: Path, runs: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), str(db), str(ledger), str(runs)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _crash_until_done(tmp_path: Path, runs: int, seed: int) -> tuple[int, list[tuple[str, str]]]:
    rng = random.Random(seed)
    db, ledger = tmp_path / "flux.db", tmp_path / "ledger.db"
    kills = 0
    while True:
        proc = _start(db, ledger, runs)
        target = len(ledger_rows(ledger)) + rng.randint(1, 3)
        if not kill_when_ledger_reaches(proc, ledger, target, limit=60):
            finish(proc)
            return kills, ledger_rows(ledger)
        kills += 1


def _check_flux_db(db: Path, runs: int) -> None:
    with sqlite3.connect(db) as conn:
        statuses = dict(conn.execute("SELECT id, status FROM flux_runs"))
    assert statuses == {f"run-{i}": "completed" for i in range(runs)}


@pytest.mark.parametrize("seed", [1, 2])
def test_sigkill_at_random_points_loses_nothing_and_repeats_only_in_flight_steps(
    tmp_path: Path, seed: int
) -> None:
    runs = 15
    kills, rows = _crash_until_done(tmp_path, runs, seed)
    assert kills >= 25, f"only {kills} kills: the test did not crash the process enough"
    _check_flux_db(tmp_path / "flux.db", runs)
    counts = Counter(rows)
    expected = {(f"run-{i}", step) for i in range(runs) for step in STEPS}
    assert set(counts) == expected, "a step's effect is missing or unexpected"
    repeats = sum(count - 1 for count in counts.values())
    assert repeats <= kills, f"{repeats} repeated effects for {kills} kills"


def test_restart_without_crash_resumes_nothing_twice(tmp_path: Path) -> None:
    db, ledger = tmp_path / "flux.db", tmp_path / "ledger.db"
    for _ in range(2):
        finish(_start(db, ledger, 3))
    assert Counter(ledger_rows(ledger)) == Counter(
        {(f"run-{i}", step): 1 for i in range(3) for step in STEPS}
    )
