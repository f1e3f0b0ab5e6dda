"""``flux serve`` and ``flux bundle``, run as the real executable.

Bad inputs tried: serve without --app, on a public interface without a token, with an app
module that does not import; bundle with a target that is not MODULE:WF, an attribute that is
not a workflow, and an --out folder that is not empty.
"""

from __future__ import annotations

import importlib
import re
import subprocess
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from test_cli import FLUX, _env, flux

from flux import FluxEngine
from flux.server import check_bind, create_app, load_app


def test_serve_runs_the_app_of_a_module(tmp_path: Path) -> None:
    db = tmp_path / "flux.db"
    process = subprocess.Popen(
        [str(FLUX), "serve", "--app", "flux_app", "--port", "0"],
        cwd=tmp_path,
        env=_env(db),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        port = None
        for line in process.stderr:  # uvicorn says where it listens once it is up
            found = re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", line)
            if found:
                port = int(found.group(1))
                break
        assert port, "uvicorn never said it was running"
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            names = [w["name"] for w in http.get("/api/workflows").json()["workflows"]]
            assert names == ["greet", "fails", "approval", "held"]
            run = http.post("/api/workflows/greet/runs?wait=20", json={"input": {"name": "cy"}}).json()
            assert run["status"] == "completed"  # the in-process worker drove it
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert db.exists()  # the engine used FLUX_DB


def test_serve_refuses_bad_setups(tmp_path: Path) -> None:
    db = tmp_path / "flux.db"
    missing = flux(db, "serve")
    assert missing.returncode == 2 and "needs --app MODULE" in missing.stderr
    public = flux(db, "serve", "--app", "flux_app", "--host", "0.0.0.0")
    assert public.returncode == 2 and "FLUX_API_TOKEN" in public.stderr and "--insecure-bind" in public.stderr
    broken = flux(db, "serve", "--app", "no_such_module_here")
    assert broken.returncode == 2 and "cannot import module" in broken.stderr


def test_bundle_writes_a_folder(tmp_path: Path) -> None:
    db = tmp_path / "flux.db"
    done = flux(db, "bundle", "flux_app:greet", "--out", str(tmp_path / "svc"), "--postgres")
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout
    written = sorted(p.name for p in (tmp_path / "svc").iterdir())
    assert written == [
        "Dockerfile",
        "README.md",
        "app.py",
        "docker-compose.yml",
        "flux_app.py",
        "requirements.txt",
    ]
    assert "postgres:16" in (tmp_path / "svc" / "docker-compose.yml").read_text()

    again = flux(db, "bundle", "flux_app:greet", "--out", str(tmp_path / "svc"))
    assert again.returncode == 2 and "not an empty folder" in again.stderr
    bad = flux(db, "bundle", "flux_app", "--out", str(tmp_path / "x"))
    assert bad.returncode == 2 and "MODULE:WORKFLOW" in bad.stderr
    not_wf = flux(db, "bundle", "flux_app:not_a_workflow", "--out", str(tmp_path / "y"))
    assert not_wf.returncode == 2 and "not a workflow" in not_wf.stderr


def test_load_app_finds_or_builds_the_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "srv_with_app.py").write_text(
        "from flux import FluxEngine, create_workflow\n"
        "from flux.server import create_app\n"
        "flow = create_workflow('w').step('s', lambda ctx: 1)\n"
        "app = create_app(FluxEngine(), workflows=[flow], token='t')\n"
    )
    (tmp_path / "srv_with_engine.py").write_text(
        "from flux import FluxEngine, create_workflow\n"
        "engine = FluxEngine()\n"
        "workflows = [create_workflow('w').step('s', lambda ctx: 1)]\n"
    )
    (tmp_path / "srv_empty.py").write_text("x = 1\n")
    (tmp_path / "srv_wrong_app.py").write_text("app = 'not an app'\n")
    monkeypatch.chdir(tmp_path)
    made = load_app("srv_with_app")
    assert made is importlib.import_module("srv_with_app").app
    assert load_app(str(tmp_path / "srv_with_app.py")) is made
    assert isinstance(load_app("srv_with_engine"), Starlette)
    with pytest.raises(ValueError, match="makes its own engine"):
        load_app("srv_with_engine", db=str(tmp_path / "x.db"))
    with pytest.raises(ValueError, match="makes its own app"):
        load_app("srv_with_app", db=str(tmp_path / "x.db"))
    with pytest.raises(ValueError, match="has no 'app'"):
        load_app("srv_empty")
    with pytest.raises(ValueError, match="not an app made by"):
        load_app("srv_wrong_app")
    with pytest.raises(ValueError, match="cannot import module"):
        load_app("srv_missing_module")


def test_check_bind_allows_loopback_or_a_token() -> None:
    open_app = create_app(FluxEngine())
    for host in ("127.0.0.1", "::1", "localhost"):
        check_bind(open_app, host)
    with pytest.raises(ValueError, match="FLUX_API_TOKEN"):
        check_bind(open_app, "0.0.0.0")
    check_bind(open_app, "0.0.0.0", insecure_bind=True)
    check_bind(create_app(FluxEngine(), token="t"), "0.0.0.0")


SCHEDULED = """
from flux import Schedule, create_workflow

report = create_workflow("report").step("build", lambda ctx: "built")
workflows = [report]
schedules = [Schedule("nightly", report, cron="0 2 * * *")]
"""


def test_worker_fires_the_schedules_of_its_app_and_serve_leaves_them_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sched_app.py").write_text(SCHEDULED)
    env = _env(tmp_path / "flux.db")
    env["PYTHONPATH"] = f"{tmp_path}:{env['PYTHONPATH']}"
    process = subprocess.Popen(
        [str(FLUX), "worker", "--app", "sched_app"], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stderr is not None
        started = next(line for line in process.stderr if "started on" in line)
        assert "schedules: nightly" in started
    finally:
        process.terminate()
        process.wait(timeout=30)

    monkeypatch.chdir(tmp_path)
    assert isinstance(load_app("sched_app", worker=False), Starlette)  # schedules are the worker's
    with pytest.raises(ValueError, match="two schedules"):
        (tmp_path / "sched_twice.py").write_text(SCHEDULED + "schedules = schedules * 2\n")
        load_app("sched_twice")
