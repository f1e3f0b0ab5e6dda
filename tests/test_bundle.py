"""``flux.server.bundle``: a deployable folder whose ``app.py`` really serves ``POST /run``.

Bad inputs tried: a target without ``:``, a module that does not exist, an attribute that is
not a workflow, an ``--out`` folder that is not empty, ``POST /run`` with unknown fields and
with input of the wrong type.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from server_support import bound_socket

from flux.server import bundle

MODULE = """
from dataclasses import dataclass

from flux import create_workflow


@dataclass
class Order:
    sku: str
    quantity: int


def price(ctx):
    ctx.data["total"] = ctx.input.quantity * 5
    return ctx.data["total"]


bundled_orders = (
    create_workflow("bundled-orders")
    .input(Order)
    .step("price", price)
    .step("confirm", lambda ctx: f"{ctx.input.quantity} x {ctx.input.sku}")
)
not_a_workflow = 42
"""


@pytest.fixture
def module(tmp_path: Path) -> Path:
    source = tmp_path / "src" / "bundled_orders_mod.py"
    source.parent.mkdir()
    source.write_text(textwrap.dedent(MODULE))
    return source


@pytest.fixture
def served_bundle(module: Path, tmp_path: Path) -> Iterator[str]:
    """Generate a bundle, start its app.py with uvicorn in a subprocess; yield its base URL."""
    out = bundle(f"{module}:bundled_orders", tmp_path / "service")
    sock = bound_socket()
    env = {**os.environ, "FLUX_DB": f"sqlite:///{tmp_path / 'service.db'}"}
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app:app", "--fd", str(sock.fileno()), "--log-level", "warning"],
        cwd=out,
        env=env,
        pass_fds=[sock.fileno()],
    )
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        process.terminate()
        process.wait(timeout=30)
        sock.close()


def test_bundle_writes_a_deployable_folder(module: Path, tmp_path: Path) -> None:
    out = bundle(f"{module}:bundled_orders", tmp_path / "plain")
    names = sorted(path.name for path in out.iterdir())
    assert names == [
        "Dockerfile",
        "README.md",
        "app.py",
        "bundled_orders_mod.py",
        "docker-compose.yml",
        "requirements.txt",
    ]
    assert (out / "requirements.txt").read_text() == "flux-workflow[server]\n"
    assert "postgres" not in (out / "docker-compose.yml").read_text()
    assert "uvicorn" in (out / "Dockerfile").read_text()
    assert "POST /run" in (out / "README.md").read_text()
    compile((out / "app.py").read_text(), "app.py", "exec")

    with_pg = bundle(f"{module}:bundled_orders", tmp_path / "pg", postgres=True)
    compose = (with_pg / "docker-compose.yml").read_text()
    assert "image: postgres:16" in compose and "FLUX_DB: postgresql://" in compose
    assert (with_pg / "requirements.txt").read_text() == "flux-workflow[server,postgres]\n"


def test_the_bundled_app_runs_the_workflow(served_bundle: str) -> None:
    with httpx.Client(base_url=served_bundle, timeout=30) as http:
        response = http.post("/run", json={"initialData": {"sku": "tea", "quantity": 3}})
        assert response.status_code == 200, response.text
        run = response.json()
        assert run["status"] == "completed"
        assert run["workflow"] == "bundled-orders"
        assert run["outputs"] == {"price": 15, "confirm": "3 x tea"}
        assert run["data"] == {"total": 15}
        assert [step["step"] for step in run["steps"]] == ["price", "confirm"]
        assert http.get(f"/api/runs/{run['id']}").json()["status"] == "completed"  # the API is there too

        assert http.post("/run", json={"initial": {}}).status_code == 400
        wrong = http.post("/run", json={"initialData": {"sku": "tea"}})
        assert wrong.status_code == 422 and "Order" in wrong.json()["error"]["message"]


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("no_colon_here", "MODULE:WORKFLOW"),
        ("surely_missing_module_xyz:flow", "cannot import module"),
    ],
)
def test_bad_targets(target: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=message):
        bundle(target, tmp_path / "out")


def test_not_a_workflow_and_a_full_out_folder(module: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a workflow"):
        bundle(f"{module}:not_a_workflow", tmp_path / "out")
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not an empty folder"):
        bundle(f"{module}:bundled_orders", full)
    assert sorted(p.name for p in full.iterdir()) == ["keep.txt"]
