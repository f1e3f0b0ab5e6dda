#!/usr/bin/env python3
"""Set up and run flux's everyday tasks with nothing but Python 3.11+.

    python3 dev.py demo                  # create .venv, install flux, run a durable demo workflow on SQLite
    python3 dev.py test                  # create .venv, install flux[dev], run ruff, mypy --strict and pytest
    python3 dev.py test --quick          # the same without the slow tests (SIGKILL, several processes)
    python3 dev.py run examples/X.py     # run a script with the .venv's Python (flux installed)

Extra arguments after ``test`` go to pytest (``python3 dev.py test -k retry``); after ``run``, to the
script. ``.venv`` is created on first use, and created again if its Python is broken or older than
3.11; flux is installed into it (editable) again only when ``pyproject.toml`` changed since the last
install.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
MIN_PYTHON = (3, 11)


def venv_bin(venv_dir: Path) -> Path:
    """The directory of a virtual environment's executables."""
    return venv_dir / ("Scripts" if os.name == "nt" else "bin")


BIN = venv_bin(VENV)


def run(*args: str) -> None:
    print("+", " ".join(args), flush=True)
    subprocess.run(args, cwd=ROOT, check=True)


def python_works(python: Path) -> bool:
    """Whether ``python`` starts and is at least MIN_PYTHON (False for a missing or broken one)."""
    check = f"import sys; sys.exit(0 if sys.version_info >= {MIN_PYTHON!r} else 1)"
    try:
        done = subprocess.run([str(python), "-c", check], capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def install_stamp(pyproject: Path, extra: str) -> str:
    """What an install of ``extra`` from ``pyproject`` leaves in the stamp file."""
    digest = hashlib.sha256(pyproject.read_bytes()).hexdigest()
    return f"{digest} {extra or '-'}\n"


def needs_install(stamp: Path, pyproject: Path, extra: str) -> bool:
    """Whether flux[extra] must be installed: never installed, or pyproject.toml changed since.

    An install with the ``dev`` extra also serves a task that needs no extra.
    """
    if not stamp.exists():
        return True
    recorded = stamp.read_text(encoding="utf-8")
    return recorded not in {install_stamp(pyproject, extra), install_stamp(pyproject, "dev")}


def remove_if_broken(venv_dir: Path) -> bool:
    """Delete ``venv_dir`` if its Python is missing, broken or too old; True if it was deleted."""
    if not venv_dir.exists() or python_works(venv_bin(venv_dir) / "python"):
        return False
    wanted = f"{MIN_PYTHON[0]}.{MIN_PYTHON[1]}"
    print(f"dev.py: {venv_dir} has no working Python {wanted} or newer; creating it again", flush=True)
    shutil.rmtree(venv_dir)
    return True


def ensure_venv(extra: str, venv_dir: Path = VENV) -> Path:
    """Create (or repair) ``venv_dir`` and install flux[extra] into it if needed; return its python."""
    python = venv_bin(venv_dir) / "python"
    remove_if_broken(venv_dir)
    if not venv_dir.exists():
        venv.EnvBuilder(with_pip=True).create(venv_dir)
    stamp = venv_dir / "flux-install-stamp"
    pyproject = ROOT / "pyproject.toml"
    if needs_install(stamp, pyproject, extra):
        stamp.unlink(missing_ok=True)  # an interrupted install is not mistaken for a finished one
        target = f".[{extra}]" if extra else "."
        run(str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-e", target)
        stamp.write_text(install_stamp(pyproject, extra), encoding="utf-8")
    return python


def pytest_args(args: list[str]) -> list[str]:
    """The pytest arguments of ``dev.py test ARGS``: ``--quick`` becomes ``-m "not slow"``."""
    if "--quick" not in args:
        return args
    return ["-m", "not slow", *(arg for arg in args if arg != "--quick")]


def demo() -> None:
    python = ensure_venv("")
    run(str(python), "examples/order_fulfillment.py")


def test(args: list[str]) -> None:
    ensure_venv("dev")
    run(str(BIN / "ruff"), "check", ".")
    run(str(BIN / "mypy"), "--strict", "flux", "tests")
    run(str(BIN / "pytest"), *pytest_args(args))


def run_script(args: list[str]) -> int:
    """Run ``python ARGS`` with the .venv's Python, in the current directory; its exit code."""
    if not args:
        sys.exit("usage: python3 dev.py run SCRIPT [ARGS...], e.g. python3 dev.py run examples/branching.py")
    python = ensure_venv("")
    return subprocess.run([str(python), *args]).returncode


def main() -> None:
    if sys.version_info < MIN_PYTHON:
        found = sys.version.split()[0]
        sys.exit(f"dev.py needs Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer; this is {found}")
    task = sys.argv[1] if len(sys.argv) > 1 else ""
    try:
        if task == "demo":
            demo()
        elif task == "test":
            test(sys.argv[2:])
        elif task == "run":
            sys.exit(run_script(sys.argv[2:]))
        else:
            sys.exit(__doc__)
    except subprocess.CalledProcessError as exc:
        sys.exit(exc.returncode)


if __name__ == "__main__":
    main()
