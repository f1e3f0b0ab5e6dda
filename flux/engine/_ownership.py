"""Who drives a run: owner ids that name a process, and whether that process still lives.

An owner id is ``host/pid/start/token``: the host name, the process id, the process's start
time (so a reused pid is not mistaken for the old process) and a per-engine token.
"""

from __future__ import annotations

import os
import socket
import uuid
from functools import cache


def _process_start(pid: int) -> str:
    """The kernel's start time of ``pid`` (clock ticks since boot), or "" where unknown."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            stat = fh.read()
    except OSError:
        return ""
    # Field 22 (starttime) counts from after the command name, which may contain spaces.
    return stat.rsplit(")", 1)[1].split()[19]


@cache
def host_name() -> str:
    """This host's name in owner ids: ``FLUX_HOSTNAME`` if set (containers often share host
    names), else the machine's host name.

    Raises:
        ValueError: ``FLUX_HOSTNAME`` holds a ``/`` (owner ids are ``/``-separated).
    """
    name = os.environ.get("FLUX_HOSTNAME") or socket.gethostname()
    if "/" in name:
        raise ValueError(f"FLUX_HOSTNAME must not contain '/', got {name!r}; use a plain host name")
    return name


def new_owner_id() -> str:
    """A fresh owner id for an engine in this process."""
    pid = os.getpid()
    return f"{host_name()}/{pid}/{_process_start(pid)}/{uuid.uuid4().hex[:8]}"


def owner_is_dead(owner: str) -> bool:
    """True when ``owner`` names a process on this host that no longer exists.

    Owners on other hosts are never declared dead here: their leases expire instead.
    """
    parts = owner.split("/")
    if len(parts) != 4 or parts[0] != host_name():
        return False
    try:
        pid = int(parts[1])
    except ValueError:
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    start = _process_start(pid)
    return bool(start and parts[2] and start != parts[2])
