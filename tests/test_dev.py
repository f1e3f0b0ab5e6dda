"""dev.py: installs only when pyproject.toml changed, repairs a broken .venv, ``test --quick``, ``run``."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def load_dev() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dev", ROOT / "dev.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


dev = load_dev()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], []),
        (["-k", "retry"], ["-k", "retry"]),
        (["--quick"], ["-m", "not slow"]),
        (["-x", "--quick", "tests/test_retry.py"], ["-m", "not slow", "-x", "tests/test_retry.py"]),
    ],
)
def test_quick_skips_the_slow_tests(args: list[str], expected: list[str]) -> None:
    assert dev.pytest_args(args) == expected


def test_the_slow_marker_is_registered_and_used() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert '"slow: ' in pyproject
    for name in ("test_crash.py", "test_control_crash.py", "test_worker_processes.py"):
        assert "pytestmark = pytest.mark.slow" in (ROOT / "tests" / name).read_text(encoding="utf-8")


def test_an_install_is_repeated_only_when_pyproject_changed(tmp_path: Path) -> None:
    pyproject, stamp = tmp_path / "pyproject.toml", tmp_path / "stamp"
    pyproject.write_text('[project]\nname = "x"\n', encoding="utf-8")
    assert dev.needs_install(stamp, pyproject, "")  # never installed
    stamp.write_text(dev.install_stamp(pyproject, ""), encoding="utf-8")
    assert not dev.needs_install(stamp, pyproject, "")
    assert dev.needs_install(stamp, pyproject, "dev")  # the dev extra was never installed
    stamp.write_text(dev.install_stamp(pyproject, "dev"), encoding="utf-8")
    assert not dev.needs_install(stamp, pyproject, "dev")
    assert not dev.needs_install(stamp, pyproject, "")  # flux[dev] includes flux
    pyproject.write_text('[project]\nname = "x"\ndependencies = ["attrs"]\n', encoding="utf-8")
    assert dev.needs_install(stamp, pyproject, "dev")
    assert dev.needs_install(stamp, pyproject, "")


def fake_venv(root: Path, python_script: str | None) -> Path:
    """A .venv whose python is a shell script (None: a link to a Python that is gone)."""
    venv_dir = root / ".venv"
    bin_dir = dev.venv_bin(venv_dir)
    bin_dir.mkdir(parents=True)
    python = bin_dir / "python"
    if python_script is None:
        python.symlink_to(root / "python3.10-removed-by-an-upgrade")
    else:
        python.write_text(python_script, encoding="utf-8")
        python.chmod(0o755)
    return venv_dir


@pytest.mark.parametrize(
    "python_script",
    [None, "#!/bin/sh\nexit 1\n", "#!/bin/sh\necho 'Python 3.9.18'; exit 1\n", "not a program\n"],
    ids=["dangling-link", "crashes", "too-old", "not-executable-text"],
)
def test_a_broken_or_old_venv_is_removed_to_be_created_again(
    tmp_path: Path, python_script: str | None
) -> None:
    venv_dir = fake_venv(tmp_path, python_script)
    assert dev.remove_if_broken(venv_dir)
    assert not venv_dir.exists()


def test_a_working_venv_is_kept(tmp_path: Path) -> None:
    venv_dir = fake_venv(tmp_path, f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    assert not dev.remove_if_broken(venv_dir)
    assert venv_dir.exists()
    assert not dev.remove_if_broken(tmp_path / "no-venv-yet")


def test_run_uses_the_venv_python_and_passes_arguments_and_exit_code(tmp_path: Path) -> None:
    script = tmp_path / "probe.py"
    script.write_text("import sys, flux\nprint(sys.prefix, sys.argv[1:])\nsys.exit(3)\n", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(ROOT / "dev.py"), "run", "probe.py", "a", "b c"],
        cwd=tmp_path,  # the script's path is taken from where dev.py is called
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 3, done.stderr
    prefix, _, args = done.stdout.strip().partition(" ")
    assert Path(prefix).resolve() == (ROOT / ".venv").resolve()
    assert args == "['a', 'b c']"


def test_run_without_a_script_says_how_to_use_it() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "dev.py"), "run"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert "usage: python3 dev.py run SCRIPT" in done.stderr
