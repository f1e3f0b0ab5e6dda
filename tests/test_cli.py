"""The `flux` command, run as the real executable in subprocesses against SQLite files.

The workflows come from tests/cli_scripts/flux_app.py. ``seeded`` runs three workflows once
per module (completed, failed, suspended) into a database the read-only tests share; tests that
change runs use a database of their own.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import pty
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from click.testing import CliRunner

from flux import FluxEngine
from flux.cli import cli
from flux.storage import SQLiteStorage

FLUX = Path(sys.executable).with_name("flux")
SCRIPTS = Path(__file__).resolve().parent / "cli_scripts"


def _env(db: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUX_")}
    path = os.pathsep.join(p for p in (str(SCRIPTS), env.get("PYTHONPATH")) if p)
    return {**env, "PYTHONPATH": path, "FLUX_DB": str(db), "COLUMNS": "200", **extra}


def flux(db: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `flux ARGS` with FLUX_DB=db in db's directory."""
    return subprocess.run(
        [str(FLUX), *args], cwd=db.parent, env=_env(db, **env), capture_output=True, text=True, timeout=120
    )


def ok(db: Path, *args: str, code: int = 0) -> str:
    done = flux(db, *args)
    assert done.returncode == code, (done.stdout, done.stderr)
    return done.stdout


@attrs.frozen
class Seeded:
    db: Path
    greet: subprocess.CompletedProcess[str]
    fails: subprocess.CompletedProcess[str]
    approval: subprocess.CompletedProcess[str]

    def run_id(self, workflow: str) -> str:
        [found] = [r["id"] for r in ndjson(ok(self.db, "list", "--json")) if r["workflow"] == workflow]
        return str(found)


def ndjson(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    db = tmp_path_factory.mktemp("seeded") / "flux.db"
    return Seeded(
        db=db,
        greet=flux(db, "run", "flux_app:greet", "--input", '{"name": "ann"}', "--label", "tenant=acme"),
        fails=flux(db, "--app", "flux_app", "run", "fails"),
        approval=flux(db, "run", "--app", "flux_app", "approval", "--label", "tenant=other"),
    )


def test_run_shows_each_step_and_exits_by_status(seeded: Seeded) -> None:
    """Exit 0 completed, 1 failed, 3 suspended; each step gets a ✓/✗/⏸ line with its duration."""
    assert seeded.greet.returncode == 0, seeded.greet.stderr
    lines = seeded.greet.stdout.splitlines()
    assert [line.split()[:2] for line in lines[:2]] == [["✓", "hello"], ["✓", "shout"]]
    assert lines[-1].startswith("run ") and " completed in " in lines[-1]

    assert seeded.fails.returncode == 1
    assert "✗ charge ValueError: card declined" in seeded.fails.stdout
    assert " failed in " in seeded.fails.stdout

    assert seeded.approval.returncode == 3
    assert "⏸ approved waiting for signal 'approved'" in seeded.approval.stdout
    assert "it waits for signal 'approved': flux signal " in seeded.approval.stdout
    assert seeded.greet.stderr == seeded.fails.stderr == seeded.approval.stderr == ""


def test_list_as_table_and_ndjson_with_filters(seeded: Seeded) -> None:
    """A table of every run; NDJSON per run; --status, --workflow, --label and --limit filter."""
    runs = ndjson(ok(seeded.db, "list", "--json"))
    assert [(r["workflow"], r["status"], r["labels"]) for r in runs] == [
        ("approval", "suspended", {"tenant": "other"}),
        ("fails", "failed", {}),
        ("greet", "completed", {"tenant": "acme"}),
    ]
    assert runs[0]["current_step"] == "approved" and runs[2]["duration"] > 0
    table = ok(seeded.db, "list").splitlines()
    assert table[0].split() == ["id", "workflow", "status", "created", "(UTC)", "duration", "step", "labels"]
    assert [row.split()[:3] for row in table[2:]] == [[r["id"], r["workflow"], r["status"]] for r in runs]

    def ids(*args: str) -> list[str]:
        return [r["workflow"] for r in ndjson(ok(seeded.db, "list", "--json", *args))]

    assert ids("--status", "failed", "--status", "completed") == ["fails", "greet"]
    assert ids("--workflow", "greet") == ["greet"]
    assert ids("--label", "tenant=acme") == ["greet"]
    assert ids("--limit", "1") == ["approval"]


def test_show_prints_the_timeline_and_cuts_values_unless_full(seeded: Seeded) -> None:
    """show: header, one timeline row per visit, data and outputs (cut at 80 characters);
    --full prints them whole; --json is one document with every field."""
    run_id = seeded.run_id("greet")
    text = ok(seeded.db, "show", run_id)
    assert f"run       {run_id}" in text and "labels    tenant=acme" in text
    assert [line.split()[:4] for line in text.splitlines() if line.strip()[:2] in ("0 ", "1 ")] == [
        ["0", "hello", "completed", "1"],
        ["1", "shout", "completed", "1"],
    ]
    assert 'greeted   "ann"' in text and "HELLO ANN!!!" in text and "!…" in text
    assert "!" * 100 in ok(seeded.db, "show", "--full", run_id)

    document = json.loads(ok(seeded.db, "show", run_id, "--json"))
    assert document["status"] == "completed" and document["data"] == {"greeted": "ann"}
    assert document["outputs"]["shout"] == "HELLO ANN" + "!" * 100
    assert [s["step"] for s in document["steps"]] == ["hello", "shout"]

    failed = ok(seeded.db, "show", seeded.run_id("fails"))
    assert "error     ValueError: card declined in step charge" in failed


def test_signal_resume_and_cancel(tmp_path: Path) -> None:
    """A signal is stored and shown; resume then finishes the run with the payload; cancel ends
    another suspended run."""
    db = tmp_path / "flux.db"
    ok(db, "run", "flux_app:approval", code=3)
    ok(db, "run", "flux_app:approval", code=3)
    waiting, other = [r["id"] for r in ndjson(ok(db, "list", "--json"))]

    assert "signal 'approved' stored for run" in ok(
        db, "signal", waiting, "approved", "--payload", '{"by": "ann"}'
    )
    shown = ok(db, "show", waiting)
    assert "signals" in shown and "approved" in shown and "waiting" in shown

    resumed = ok(db, "resume", waiting, "--app", "flux_app")
    assert resumed.splitlines()[-1].startswith(f"run {waiting} completed")
    document = json.loads(ok(db, "show", waiting, "--json"))
    assert document["outputs"]["finish"] == "approved by ann"
    assert document["signals"][0]["consumed_by"] == 1

    cancelled = json.loads(ok(db, "--app", "flux_app", "cancel", other, "--reason", "not needed", "--json"))
    assert cancelled["status"] == "cancelled" and cancelled["error"]["message"] == "not needed"


def test_retry_and_replay(tmp_path: Path) -> None:
    """retry continues a failed run from a step (exit 0 once it completes); replay runs a
    finished run again as a new run."""
    db = tmp_path / "flux.db"
    ok(db, "run", "flux_app:fails", code=1)
    [failed] = [r["id"] for r in ndjson(ok(db, "list", "--json"))]
    done = flux(db, "retry", failed, "charge", "--app", "flux_app", "--json", FLUX_TEST_FIXED="1")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["outputs"] == {"charge": "charged", "ship": "shipped"}

    replay = flux(db, "--app", "flux_app", "replay", failed, "--json", "-vv")
    replayed = json.loads(replay.stdout)
    assert replayed["id"] != failed and replayed["status"] == "completed"
    # -vv: the engine's DEBUG lines, one per checkpoint, on stderr
    assert f"DEBUG flux.engine: run {replayed['id']} checkpoint: " in replay.stderr
    assert len(ndjson(ok(db, "list", "--json"))) == 2


def test_graph_prints_mermaid_or_json(seeded: Seeded) -> None:
    """graph needs no database: Mermaid by default, the plan's description with --format json."""
    assert ok(seeded.db, "graph", "flux_app:greet").startswith("flowchart")
    described = json.loads(ok(seeded.db, "graph", "--app", "flux_app", "approval", "--format", "json"))
    assert described["name"] == "approval"
    assert [s["name"] for s in described["steps"]] == ["ship", "approved", "finish"]


def test_prune_deletes_finished_runs_only(tmp_path: Path) -> None:
    """prune --older-than deletes runs finished longer ago, of --status if given; never a
    suspended run. (A reused --key returns the run it started instead of a second one.)"""
    db = tmp_path / "flux.db"
    first = ok(db, "run", "flux_app:greet", "--input", '{"name": "x"}', "--key", "order-1")
    again = ok(db, "run", "flux_app:greet", "--input", '{"name": "x"}', "--key", "order-1")
    assert again.startswith("(the idempotency key returned run ") and first.splitlines()[-1] in again
    ok(db, "run", "flux_app:fails", code=1)
    ok(db, "run", "flux_app:approval", code=3)
    assert ok(db, "prune", "--older-than", "7d") == "deleted 0 run(s) finished 7d+ ago\n"
    assert json.loads(ok(db, "prune", "--older-than", "0s", "--status", "completed", "--json")) == {
        "deleted": 1
    }
    assert json.loads(ok(db, "prune", "--older-than", "0s", "--json")) == {"deleted": 1}
    assert [r["status"] for r in ndjson(ok(db, "list", "--json"))] == ["suspended"]


def test_export_then_import_into_a_second_database(seeded: Seeded, tmp_path: Path) -> None:
    """export prints one document; import stores it under the same id elsewhere, once."""
    run_id = seeded.run_id("approval")
    exported = tmp_path / "run.json"
    exported.write_text(ok(seeded.db, "export", run_id))
    other = tmp_path / "other.db"
    assert ok(other, "import", str(exported)) == f"imported run {run_id} (approval, suspended)\n"
    before = json.loads(ok(seeded.db, "show", run_id, "--json"))
    after = json.loads(ok(other, "show", run_id, "--json"))
    assert after == before | {"owner": None, "lease_expires_at": None}

    again = flux(other, "import", str(exported))
    assert again.returncode == 2
    assert again.stderr == (
        f"flux: error: run {run_id!r} already exists in this database; import refuses to overwrite it "
        "(delete it first, or import into another database)\n"
    )


BAD_INPUTS = [
    (["run", "nosuch:flow"], "cannot import module 'nosuch': no module named 'nosuch' in "),
    (["run", "flux_ap:greet"], "did you mean: flux_app?"),
    (["run", "flux_app:gret"], "module 'flux_app' has no attribute 'gret'; did you mean: greet?"),
    (["run", "flux_app:not_a_workflow"], "flux_app:not_a_workflow is a dict, not a workflow"),
    (["run", "greet"], "workflow 'greet' is not MODULE:ATTRIBUTE"),
    (
        ["run", "gret", "--app", "flux_app"],
        "flux_app.workflows has no workflow named 'gret'; did you mean: greet?",
    ),
    (["run", "broken_module:flow"], "module 'broken_module' failed to import: RuntimeError: boom"),
    (["run", "flux_app:greet", "--input", "{bad"], "--input is not valid JSON (Expecting property name"),
    (["run", "flux_app:greet", "--input", "@missing.json"], "cannot read --input from missing.json"),
    (["run", "flux_app:greet", "--label", "tenant"], "--label 'tenant' is not KEY=VALUE"),
    (["--db", "postgress://x/y", "list"], "unknown storage URL scheme 'postgress'"),
    (["list"], "no flux database at"),
    (["import", "notjson.txt"], "notjson.txt is not JSON"),
    (["prune", "--older-than", "7 days"], "--older-than '7 days' is not a duration"),
    (["worker"], "flux worker needs --app MODULE"),
]


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Path]:
    """A database path nothing has created, beside a broken module and a non-JSON file."""
    (tmp_path / "broken_module.py").write_text("raise RuntimeError('boom')\n")
    (tmp_path / "notjson.txt").write_text("not json\n")
    db = tmp_path / "flux.db"
    yield db
    assert not db.exists(), "bad input must not create the database"


@pytest.mark.parametrize(("args", "message"), BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(fresh: Path, args: list[str], message: str) -> None:
    """Each bad input: exit 2, one stderr line saying what to do, no traceback, no database."""
    done = flux(fresh, *args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("flux: error: "), done.stderr
    assert message in done.stderr
    assert done.stdout == ""


def test_bad_runs_and_steps_in_an_existing_database(seeded: Seeded) -> None:
    """Unknown runs (close ids listed), unknown steps, a run whose workflow --app does not list:
    exit 2, one line; -v adds the traceback; nothing changes in the database."""
    before = ok(seeded.db, "list", "--json")
    run_id = seeded.run_id("fails")
    cases = [
        (
            ["show", run_id[:-1] + "x"],
            f"no run {run_id[:-1] + 'x'!r} in this database; did you mean: {run_id}?",
        ),
        (["export", "nope"], "no run 'nope' in this database"),
        (
            ["retry", run_id, "chrge", "--app", "flux_app"],
            "workflow 'fails' has no step 'chrge'; did you mean: charge?",
        ),
        (
            ["resume", run_id, "--from-step", "x"],
            f"run {run_id} is of workflow 'fails' and no --app names it",
        ),
        (["signal", seeded.run_id("greet"), "go"], "signals can only go to unfinished runs"),
        (["signal", seeded.run_id("approval"), "aproved", "--app", "flux_app"], "aproved"),
        (
            ["signal", seeded.run_id("approval"), "approved", "--payload", "[1,"],
            "--payload is not valid JSON",
        ),
    ]
    for args, message in cases:
        done = flux(seeded.db, *args)
        assert (done.returncode, done.stderr.count("\n")) == (2, 1), (args, done.stderr)
        assert message in done.stderr, (args, done.stderr)
    verbose = flux(seeded.db, "-v", "show", "nope")
    assert verbose.returncode == 2 and "Traceback (most recent call last)" in verbose.stderr
    assert ok(seeded.db, "list", "--json") == before


def test_help_of_every_command_has_an_example_and_python_m_flux_works(seeded: Seeded) -> None:
    """`flux --help` lists every command and `flux COMMAND --help` shows an example for each;
    `python -m flux` is the same CLI."""
    commands = ["run", "list", "show", "resume", "retry", "replay", "signal", "cancel", "worker", "graph",
                "prune", "export", "import"]  # fmt: skip
    listed = ok(seeded.db, "--help")
    runner = CliRunner()  # the same commands in-process: fifteen fewer interpreters to start
    for name in commands:
        assert f"  {name} " in listed
        shown = runner.invoke(cli, [name, "--help"])
        assert shown.exit_code == 0 and "Example: flux " in shown.output, name
    module = subprocess.run(
        [sys.executable, "-m", "flux", "list", "--json", "--db", str(seeded.db)],
        capture_output=True, text=True, env=_env(seeded.db), check=True,
    )  # fmt: skip
    assert len(ndjson(module.stdout)) == 3


def test_run_on_a_terminal_shows_a_live_view(tmp_path: Path) -> None:
    """On a terminal (a pty here) `flux run` draws the steps live, in colour."""
    db = tmp_path / "flux.db"
    main, child = pty.openpty()
    proc = subprocess.Popen(
        [str(FLUX), "run", "flux_app:greet", "--input", '{"name": "ann"}'],
        cwd=tmp_path, env=_env(db), stdin=child, stdout=child, stderr=child,
    )  # fmt: skip
    os.close(child)
    output = b""
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # the pty closes when the process ends
            break
        if not chunk:
            break
        output += chunk
    os.close(main)
    assert proc.wait(timeout=60) == 0
    text = output.decode()
    assert "\x1b[" in text and "✓ " in text and "hello" in text and "shout" in text
    assert "completed" in text


def _read_until(proc: subprocess.Popen[str], needle: str, count: int) -> list[str]:
    """Lines of the worker's stderr until ``count`` of them contain ``needle``."""
    assert proc.stderr is not None
    lines: list[str] = []
    while sum(needle in line for line in lines) < count:
        line = proc.stderr.readline()
        assert line, f"worker exited early: {''.join(lines)}"
        lines.append(line)
    return lines


@pytest.mark.slow
def test_worker_releases_runs_in_flight_on_sigterm_and_another_finishes_them(tmp_path: Path) -> None:
    """SIGTERM: the worker stops claiming, cancels what is still running after the grace period
    and releases those runs (exit 0); a second worker finishes them. One log line per run start
    and end."""
    spec = importlib.util.spec_from_file_location("flux_app", SCRIPTS / "flux_app.py")
    assert spec is not None and spec.loader is not None
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    db = tmp_path / "flux.db"

    async def start() -> list[str]:
        async with FluxEngine(SQLiteStorage(db)) as engine:
            return [await engine.start(app.held) for _ in range(3)]

    run_ids = asyncio.run(start())
    args = [str(FLUX), "worker", "--app", "flux_app", "--concurrency", "3", "--grace-period", "0"]

    first = subprocess.Popen(
        args, cwd=tmp_path, env=_env(db, FLUX_TEST_HOLD="1"), stderr=subprocess.PIPE, text=True
    )
    started = _read_until(first, "of held started", 3)
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=60) == 0
    assert "worker" in started[0] and "started on" in started[0]
    assert sorted(
        line.split(": run ")[1].split()[0] for line in started if "of held started" in line
    ) == sorted(run_ids)

    released = ndjson(ok(db, "list", "--json"))
    assert [r["status"] for r in released] == ["running"] * 3
    assert all(json.loads(ok(db, "show", r["id"], "--json"))["owner"] is None for r in released)

    second = subprocess.Popen(args, cwd=tmp_path, env=_env(db), stderr=subprocess.PIPE, text=True)
    lines = _read_until(second, "of held completed", 3)
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=60) == 0
    assert sum("resumed at step hold" in line for line in lines) == 3
    assert [r["status"] for r in ndjson(ok(db, "list", "--json"))] == ["completed"] * 3


def test_show_lists_the_lines_each_step_logged(seeded: Seeded) -> None:
    """show: a logs table with each visit's ctx.log lines (cut at 80 characters unless --full);
    --json carries them in each step record."""
    run_id = seeded.run_id("greet")
    lines = [line.split(None, 5) for line in ok(seeded.db, "show", run_id).splitlines()]
    logged = [(parts[0], parts[1], parts[4], parts[5]) for parts in lines if parts[:2] == ["hello", "#0"]]
    assert logged == [("hello", "#0", "info", "greeting ann"), ("hello", "#0", "info", "x" * 79 + "…")]
    assert "x" * 120 in ok(seeded.db, "show", "--full", run_id)
    document = json.loads(ok(seeded.db, "show", run_id, "--json"))
    first = document["steps"][0]["logs"][0]
    assert (first["level"], first["message"]) == ("info", "greeting ann") and first["time"]


def test_check_lists_the_runs_a_changed_app_would_strand(seeded: Seeded) -> None:
    """check: exit 0 when every unfinished run can go on; exit 1 listing each stranded run and
    what differs; --json gives one object per run; without --app it says what to pass."""
    done = flux(seeded.db, "check", "--app", "flux_app")
    assert done.returncode == 0, done.stderr
    assert (
        done.stdout.strip()
        == "ok: every unfinished run can continue on flux_app (approval, fails, greet, held)"
    )

    approval = seeded.run_id("approval")
    done = flux(seeded.db, "check", "--app", "changed_app")
    assert done.returncode == 1
    [line] = done.stdout.splitlines()
    assert line.startswith(
        f"stranded: run {approval} (approval, suspended, fingerprint {_fingerprint(seeded, approval)}): "
        "step 'approved' ran in the run but is not in the plan; "
    )
    assert "1 unfinished run(s) would be stranded by changed_app (approval, fails, greet)" in done.stderr

    [found] = ndjson(ok(seeded.db, "check", "--app", "changed_app", "--json", code=1))
    assert (found["run_id"], found["status"]) == (approval, "suspended")
    assert "step 'approved' ran in the run but is not in the plan" in found["differences"]

    assert flux(seeded.db, "check", "--app", "changed_app_kept").returncode == 0
    missing = flux(seeded.db, "check")
    assert missing.returncode == 2 and "flux check needs --app MODULE" in missing.stderr


def _fingerprint(seeded: Seeded, run_id: str) -> str:
    return str(json.loads(ok(seeded.db, "show", run_id, "--json"))["fingerprint"])
