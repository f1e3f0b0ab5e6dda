"""Batches of checkpoints for PostgresStorage (its group commit is
:class:`flux.storage._group_commit.GroupCommit`): queued checkpoints are written together, in
one statement, by the next round trip.

The batch statement upserts every run row and step record given as arrays (``unnest``); a run
whose stored owner is not the writer's is fenced off (its row is not returned) and gets a
:class:`LeaseLostError`, while the rest of the batch commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flux.errors import LeaseLostError
from flux.storage._sqlite_rows import Row

Checkpoint = tuple[Row, Sequence[Row]]
"""One checkpoint: the encoded run row (input None: keep the stored one) and its step rows."""

_OWNER = 9  # position of owner in a run row (RUN_COLUMNS)
_INPUT = 4


def merge(items: Sequence[Checkpoint]) -> tuple[list[Checkpoint], list[list[int]], list[int]]:
    """Fold checkpoints of one run into one (later fields and step records win), in run-id order
    (so concurrent batches lock rows in the same order).

    Returns the merged checkpoints, which items each one stands for, and the items left for a
    later round (a second checkpoint of a run with another owner, which must be fenced alone).
    """
    rows: dict[str, Row] = {}
    steps: dict[str, dict[int, Row]] = {}
    members: dict[str, list[int]] = {}
    later: list[int] = []
    for index, (row, step_rows) in enumerate(items):
        run_id = row[0]
        earlier = rows.get(run_id)
        if earlier is not None:
            if earlier[_OWNER] != row[_OWNER]:
                later.append(index)
                continue
            if row[_INPUT] is None:  # "keep the stored input": keep the earlier one's
                row = (*row[:_INPUT], earlier[_INPUT], *row[_INPUT + 1 :])
        rows[run_id] = row
        by_seq = steps.setdefault(run_id, {})
        for step in step_rows:
            by_seq[step[1]] = step
        members.setdefault(run_id, []).append(index)
    order = sorted(rows)
    merged: list[Checkpoint] = [(rows[run_id], list(steps[run_id].values())) for run_id in order]
    return merged, [members[run_id] for run_id in order], later


def columns(rows: Sequence[Row], width: int) -> list[list[Any]]:
    """Rows as one list per column (the array parameters of a batch statement)."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(column) for column in zip(*rows, strict=True)]


def fenced(run_id: str, stored_owner: str | None, owner: str | None) -> LeaseLostError:
    """The error of a checkpoint fenced off by another owner."""
    return LeaseLostError(f"run {run_id} is now owned by {stored_owner}, not {owner}", run_id=run_id)
