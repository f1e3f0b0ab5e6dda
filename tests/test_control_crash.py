"""Crash tests for constructs: real processes killed with SIGKILL, then restarted.

tests/control_scripts/ledger_constructs.py runs workflows with a parallel group, a branch and
maps; every step and map item appends a row to an external ledger before flux checkpoints it.
The tests kill the process whenever the ledger has grown by some amount, restart it (it calls
``recover()``), and check: every run completes, every effect appears, and an effect appears
more than once only for work in flight at a kill (at most one visit per concurrent strand).
"""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from crash_support import finish, kill_when_ledger_reaches, ledger_count, ledger_rows

pytestmark = pytest.mark.slow  # SIGKILLs and real processes: skipped by `dev.py test --quick`

SCRIPT = Path(__file__).parent / "control_scripts" / "ledger_constructs.py"
PARALLEL_EFFECTS = ("prepare", "left-1", "left-2", "middle-1", "middle-2", "right-1", "right-2", "finish")
STRANDS = 3  # the most visits in flight at once in the parallel workflow (three branches)
MAP_CONCURRENCY = 16


def start(mode: str, db: Path, ledger: Path, count: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), mode, str(db), str(ledger), str(count)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def runs_in(db: Path) -> dict[str, str]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT id, status FROM flux_runs"))


@pytest.mark.parametrize("seed", [1, 2])
def test_sigkill_inside_parallel_groups_branches_and_maps(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    db, ledger = tmp_path / "flux.db", tmp_path / "ledger.db"
    runs, kills = 6, 0
    while True:
        proc = start("parallel", db, ledger, runs)
        if not kill_when_ledger_reaches(proc, ledger, ledger_count(ledger) + rng.randint(1, 4)):
            finish(proc)
            break
        kills += 1
    assert kills >= 15, f"only {kills} kills: the test did not crash the process enough"
    assert runs_in(db) == {f"run-{i}": "completed" for i in range(runs)}
    counts = Counter(ledger_rows(ledger))
    expected = set()
    for i in range(runs):
        case = "even-1" if i % 2 == 0 else "odd-1"
        items = [f"items[{n}]" for n in range(5)]
        expected |= {(f"run-{i}", step) for step in (*PARALLEL_EFFECTS, case, *items)}
    assert set(counts) == expected, "an effect is missing or unexpected"
    repeats = sum(count - 1 for count in counts.values())
    assert repeats <= kills * STRANDS, f"{repeats} repeated effects for {kills} kills"


def test_a_ten_thousand_item_map_resumes_after_kills_without_rerunning_finished_items(tmp_path: Path) -> None:
    db, ledger = tmp_path / "flux.db", tmp_path / "ledger.db"
    items, kills = 10_000, 0
    for target in (2_500, 6_000):
        proc = start("map", db, ledger, items)
        assert kill_when_ledger_reaches(proc, ledger, target), "the map finished before the kill"
        kills += 1
        assert runs_in(db)["big-map"] == "running"
    finish(start("map", db, ledger, items))

    assert runs_in(db) == {"big-map": "completed"}
    counts = Counter(step for _, step in ledger_rows(ledger))
    assert set(counts) == {f"big[{i}]" for i in range(items)}
    repeats = sum(count - 1 for count in counts.values())
    assert repeats <= kills * MAP_CONCURRENCY, f"{repeats} items ran again after {kills} kills"
    with sqlite3.connect(db) as conn:
        (output,) = conn.execute(
            "SELECT output FROM flux_steps WHERE run_id = 'big-map' AND step = 'total'"
        ).fetchone()
    assert json.loads(output) == sum(range(items))
