"""Small pieces every storage backend shares."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from flux.records import RunFilter, RunRecord
from flux.status import RunStatus

T = TypeVar("T")

FINISHED = frozenset(s for s in RunStatus if s.finished)

KNOWN_RUNS = 10_000
"""How many runs a storage remembers its last write of (see :func:`remember`)."""


def remember(memory: dict[str, T], run_id: str, value: T) -> None:
    """Keep ``value`` for ``run_id`` in ``memory``, dropping the oldest entry once it holds
    :data:`KNOWN_RUNS` runs (a process drives at most a few thousand at a time)."""
    if len(memory) >= KNOWN_RUNS and run_id not in memory:
        del memory[next(iter(memory))]
    memory[run_id] = value


def only_times_moved(run: RunRecord, last: RunRecord) -> bool:
    """Whether ``run`` holds the objects of ``last`` but for updated_at and lease_expires_at
    (the engine builds each checkpoint's record from the last one: identity says it all).
    Then a checkpoint of a running run may write those two times alone (a *tick*)."""
    return (
        run.status is last.status
        and run.owner is last.owner
        and run.error is last.error
        and run.finished_at is last.finished_at
        and run.wake_at is last.wake_at
        and run.deadline_at is last.deadline_at
        and run.fingerprint is last.fingerprint
        and run.workflow is last.workflow
        and run.created_at is last.created_at
        and run.cancel_requested is last.cancel_requested
        and run.labels is last.labels
    )


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
