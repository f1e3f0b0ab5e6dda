"""Every script in examples/ runs in a fresh process, exits 0 and prints what it promises.

New examples are picked up by the glob; give them an entry in EXPECTED to pin their output.
Complete scripts in the README and the docs (Python blocks that call ``asyncio.run(main())``)
run too, so the code users copy first keeps working, and every relative link in them resolves.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted((ROOT / "examples").glob("*.py"))
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
_PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#+ (.+)$", re.MULTILINE)


def doc_scripts() -> list[tuple[str, str]]:
    """(id, code) of each complete script in the README and the docs."""
    found = []
    for path in DOCS:
        blocks = _PYTHON_BLOCK.findall(path.read_text(encoding="utf-8"))
        for index, code in enumerate(blocks):
            if "asyncio.run(main())" in code:
                found.append((f"{path.relative_to(ROOT)}#{index}", code))
    return found


DOC_SCRIPTS = doc_scripts()

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
        "a worker resumed it: completed",
        "order: failed for good after 1 attempt(s)",
    ],
    "control_flow.py": ["every construct went the expected way"],
    "human_approval.py": ["both reports were decided by the manager and finished by the worker"],
}


def test_there_are_examples() -> None:
    assert {path.name for path in SCRIPTS} >= set(EXPECTED)


def run_example(script: Path, cwd: Path, db: Path) -> subprocess.CompletedProcess[str]:
    """Run ``script`` with this interpreter and this checkout of flux, its database at ``db``."""
    env = {
        **os.environ,
        "FLUX_DB": str(db),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    return subprocess.run(
        [sys.executable, str(script)], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.stem)
def test_example_runs(script: Path, tmp_path: Path) -> None:
    done = run_example(script, tmp_path, tmp_path / "flux.db")
    report = f"exit code {done.returncode}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    assert done.returncode == 0, report
    assert done.stdout.strip(), report
    for text in EXPECTED.get(script.name, []):
        assert text in done.stdout, f"missing {text!r}\n{report}"


def test_order_fulfillment_keeps_its_runs_in_the_file(tmp_path: Path) -> None:
    script = ROOT / "examples" / "order_fulfillment.py"
    for total in (2, 4):  # a second process sees the first one's runs
        done = run_example(script, tmp_path, tmp_path / "orders.db")
        assert done.returncode == 0, done.stderr
        assert f"holds {total} order-fulfillment run(s)" in done.stdout
    assert (tmp_path / "orders.db").exists()


def test_the_readme_has_a_complete_script() -> None:
    assert any(name.startswith("README.md#") for name, _ in DOC_SCRIPTS)


@pytest.mark.parametrize(("name", "code"), DOC_SCRIPTS, ids=[name for name, _ in DOC_SCRIPTS])
def test_doc_script_runs(name: str, code: str, tmp_path: Path) -> None:
    script = tmp_path / "snippet.py"
    script.write_text(code, encoding="utf-8")
    done = run_example(script, tmp_path, tmp_path / "flux.db")
    assert done.returncode == 0, f"{name}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    assert "completed" in done.stdout, done.stdout


def anchors(markdown: str) -> set[str]:
    """The GitHub-style anchors of a page's headings."""
    text = _FENCE.sub("", markdown)
    return {
        re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-") for title in _HEADING.findall(text)
    }


def _has_anchor(page: Path, anchor: str) -> bool:
    if not anchor or page.suffix != ".md":
        return True
    return anchor in anchors(page.read_text(encoding="utf-8"))


@pytest.mark.parametrize("page", DOCS, ids=lambda path: str(path.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    text = _FENCE.sub("", page.read_text(encoding="utf-8"))
    broken = []
    for target in _LINK.findall(text):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path_part, _, anchor = target.partition("#")
        linked = (page.parent / path_part).resolve() if path_part else page
        if not linked.exists() or not _has_anchor(linked, anchor):
            broken.append(target)
    assert not broken, f"broken links in {page.name}: {broken}"
