"""A PostgreSQL server of a test's own, to stop and start mid-run (the shared test server must
never be restarted: other tests and sessions use it).

``PrivateServer.create()`` runs ``initdb`` in a new temporary directory and starts
``postgres`` on a free port of 127.0.0.1, its socket in that directory. The binaries come from
``FLUX_TEST_PG_BINDIR``, else ``pg_config --bindir``, else the newest
``/usr/lib/postgresql/*/bin`` (Debian's layout). PostgreSQL refuses to run as root, so under
root every command runs as the ``postgres`` OS user (``runuser``), which owns the directory.

The data directory lives in ``/dev/shm`` when there is one: the server still writes and
fsyncs its WAL and replays it after ``stop("immediate")``, as after a crash of its processes;
only the machine's slow disk is left out. Without the binaries the test is skipped, and under
CI (``CI=true``) it fails.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import attrs
import pytest


def _bindir() -> Path | None:
    """Where initdb, pg_ctl and postgres are, or None."""
    named = os.environ.get("FLUX_TEST_PG_BINDIR")
    if named:
        return Path(named)
    pg_config = shutil.which("pg_config")
    if pg_config:
        found = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if found.returncode == 0 and (Path(found.stdout.strip()) / "initdb").exists():
            return Path(found.stdout.strip())
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(versions[-1]).parent if versions else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@attrs.define
class PrivateServer:
    """One private PostgreSQL server: ``dsn`` names its ``postgres`` database."""

    bindir: Path
    root: Path
    port: int
    as_user: list[str]

    @classmethod
    def create(cls) -> PrivateServer:
        """initdb and start a new server (skips the test when PostgreSQL is not installed)."""
        bindir = _bindir()
        if bindir is None:
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail("CI=true but no PostgreSQL binaries (initdb, pg_ctl): set FLUX_TEST_PG_BINDIR")
            pytest.skip("no PostgreSQL binaries (initdb, pg_ctl) found: set FLUX_TEST_PG_BINDIR")
        shm = Path("/dev/shm")
        root = Path(tempfile.mkdtemp(prefix="flux-pg-", dir=shm if shm.is_dir() else None))
        as_user: list[str] = []
        if os.geteuid() == 0:  # postgres will not run as root
            shutil.chown(root, "postgres")
            as_user = ["runuser", "-u", "postgres", "--"]
        server = cls(bindir, root, _free_port(), as_user)
        # --no-sync: only the freshly made cluster skips fsync; the running server fsyncs.
        server._run("initdb", "-D", str(server.data), "-A", "trust", "-U", "postgres", "--no-sync")
        server.start()
        return server

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def pid(self) -> int:
        """The postmaster's process id (it changes with every start)."""
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run(
            [*self.as_user, str(self.bindir / tool), *args], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            log = self.root / "server.log"
            raise AssertionError(
                f"{tool} {' '.join(args)} failed: {done.stdout}{done.stderr}"
                + (log.read_text() if log.exists() else "")
            )

    def start(self) -> None:
        """Start the server and return once it accepts connections (after crash recovery)."""
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        log = str(self.root / "server.log")
        self._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l", log, "-o", options)

    def stop(self, mode: str) -> None:
        """``pg_ctl stop -m mode``: ``immediate`` kills every process without a shutdown
        checkpoint (a crash: the next start replays the WAL); ``fast`` ends the sessions and
        shuts down cleanly."""
        self._run("pg_ctl", "stop", "-w", "-t", "60", "-D", str(self.data), "-m", mode)

    def destroy(self) -> None:
        """Stop the server (if it runs) and delete its directory."""
        if (self.data / "postmaster.pid").exists():
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
