#!/usr/bin/env python3
"""Set up and run flux's everyday tasks with nothing but Python 3.11+.

    python3 dev.py demo    # create .venv, install flux, run a durable demo workflow on SQLite
    python3 dev.py test    # create .venv, install flux[dev], run ruff, mypy --strict and pytest

Extra arguments after ``test`` go to pytest (``python3 dev.py test -k retry``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")


def run(*args: str) -> None:
    print("+", " ".join(args), flush=True)
    subprocess.run(args, cwd=ROOT, check=True)


def ensure_venv(extra: str) -> None:
    if not (BIN / "python").exists():
        venv.EnvBuilder(with_pip=True).create(VENV)
    target = f".[{extra}]" if extra else "."
    run(str(BIN / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-e", target)


def demo() -> None:
    ensure_venv("")
    run(str(BIN / "python"), "examples/order_fulfillment.py")


def test(pytest_args: list[str]) -> None:
    ensure_venv("dev")
    run(str(BIN / "ruff"), "check", ".")
    run(str(BIN / "mypy"), "--strict", "flux", "tests")
    run(str(BIN / "pytest"), *pytest_args)


def main() -> None:
    task = sys.argv[1] if len(sys.argv) > 1 else ""
    try:
        if task == "demo":
            demo()
        elif task == "test":
            test(sys.argv[2:])
        else:
            sys.exit(__doc__)
    except subprocess.CalledProcessError as exc:
        sys.exit(exc.returncode)


if __name__ == "__main__":
    main()
