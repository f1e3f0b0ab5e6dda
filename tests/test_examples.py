"""Every script in examples/ runs as its docstring says (``python3 dev.py run examples/X.py``), in a
fresh process, exits 0 and prints what it promises.

New examples are picked up by the glob; give them an entry in EXPECTED to pin their output.
The code blocks of the README and the docs are tested in tests/test_docs.py.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted((ROOT / "examples").glob("*.py"))

EXPECTED: dict[str, list[str]] = {
    "order_fulfillment.py": [
        "ok validate",
        "!! charge attempt 1 failed",
        "-- vip-gift skipped",
        "ok vip-gift",
        "completed: validate=completed",
        "holds 2 order-fulfillment run(s)",
    ],
    "branching.py": ["skip manual-review", "ran  second-signature", "all branches went the expected way"],
    "saga_trip_booking.py": [
        "cancelled hotel",
        "cancelled flight",
        "run rolled_back",
        "rolled back, newest first: hotel then flight",
    ],
    "flaky_retries.py": [
        "inventory: attempt 2 failed (ConnectionError); next in 2s",
        "prices: attempt 1 failed (RetryAfter); next in 60s",
        "run suspended at prices: retry in 60s",
        "execute continued it when due: completed",
        "order: failed for good after 1 attempt(s)",
    ],
    "control_flow.py": ["every construct went the expected way"],
    "human_approval.py": ["both reports were decided by the manager and finished by the worker"],
}


def test_there_are_examples() -> None:
    assert {path.name for path in SCRIPTS} >= set(EXPECTED)


def run_example(script: Path, db: Path) -> subprocess.CompletedProcess[str]:
    """Run ``script`` as its docstring says, ``python3 dev.py run examples/X.py`` from the root of
    the checkout, with its database at ``db``."""
    command = [sys.executable, "dev.py", "run", f"examples/{script.name}"]
    env = {**os.environ, "FLUX_DB": str(db)}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.stem)
def test_the_docstring_says_how_to_run_it(script: Path) -> None:
    docstring = ast.get_docstring(ast.parse(script.read_text(encoding="utf-8"))) or ""
    assert f"    python3 dev.py run examples/{script.name}\n" in docstring
    assert f"    .venv/bin/python examples/{script.name}" in docstring


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.stem)
def test_example_runs(script: Path, tmp_path: Path) -> None:
    done = run_example(script, tmp_path / "flux.db")
    report = f"exit code {done.returncode}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    assert done.returncode == 0, report
    assert done.stdout.strip(), report
    for text in EXPECTED.get(script.name, []):
        assert text in done.stdout, f"missing {text!r}\n{report}"


def test_order_fulfillment_keeps_its_runs_in_the_file(tmp_path: Path) -> None:
    script = ROOT / "examples" / "order_fulfillment.py"
    for total in (2, 4):  # a second process sees the first one's runs
        done = run_example(script, tmp_path / "orders.db")
        assert done.returncode == 0, done.stderr
        assert f"holds {total} order-fulfillment run(s)" in done.stdout
    assert (tmp_path / "orders.db").exists()
