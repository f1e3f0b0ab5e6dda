"""Small pieces every storage backend shares."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from flux.records import RunFilter
from flux.status import RunStatus

T = TypeVar("T")

FINISHED = frozenset(s for s in RunStatus if s.finished)


def finished_statuses(status: Sequence[RunStatus | str] | None) -> frozenset[RunStatus]:
    """The statuses ``prune`` may delete: the given ones (all finished), default every finished one.

    Raises:
        ValueError: a status is unknown or not a finished one (in-flight runs are never pruned).
    """
    if status is None:
        return FINISHED
    wanted = RunFilter(status=status).status or frozenset()
    unfinished = sorted(s.value for s in wanted - FINISHED)
    if unfinished:
        raise ValueError(
            f"prune deletes finished runs only; {', '.join(unfinished)} is not a finished status "
            f"(use {', '.join(sorted(s.value for s in FINISHED))})"
        )
    return wanted


def paginate(items: Sequence[T], filter: RunFilter) -> Sequence[T]:
    """Apply ``filter.offset`` and ``filter.limit`` to an ordered sequence."""
    end = None if filter.limit is None else filter.offset + filter.limit
    return items[filter.offset : end]


def duplicate_signal(run_id: str, name: str) -> str:
    """The message of a signal refused because each wait that takes it has one queued."""
    return (
        f"run {run_id} already holds a signal {name!r} for each wait that will take one; "
        "a duplicate would never be consumed"
    )
