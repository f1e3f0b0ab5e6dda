"""Batches of checkpoints for PostgresStorage (its group commit is
:class:`flux.storage._group_commit.GroupCommit`): queued checkpoints are written together, in
one statement, by the next round trip, on a connection held between batches.

The batch statement upserts every run row and step record given as arrays (``unnest``); a run
whose stored owner is not the writer's is fenced off (its row is not returned) and gets a
:class:`LeaseLostError`, while the rest of the batch commits.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from flux.errors import LeaseLostError, StorageError
from flux.storage._group_commit import Outcome
from flux.storage._postgres_conn import driver, retrying
from flux.storage._postgres_sql import ONE_STEPS, Statements
from flux.storage._sqlite_rows import Row
from flux.storage._sqlite_schema import RUN_COLUMNS, STEP_COLUMNS

Checkpoint = tuple[Row, Sequence[Row]]
"""One checkpoint: the encoded run row (input None: keep the stored one) and its step rows."""

_OWNER = 9  # position of owner in a run row (RUN_COLUMNS)
_INPUT = 4
_NO_STEP = (None,) * len(STEP_COLUMNS)


class BatchWriter:
    """Writes batches of checkpoints, one batch at a time (what GroupCommit guarantees), on one
    connection of the pool that it keeps between batches: a sequential run's checkpoints pay
    no pool acquire and release. The connection goes back to the pool on any error (the pool
    resets or replaces it) and on :meth:`close`; with ``hold`` false, after every batch.

    Args:
        pool: returns the asyncpg pool (raises StorageError once the storage is closed).
        sql: the statements of the storage's schema and prefix.
        where: the database, as errors name it.
        hold: whether to keep the connection between batches (False for a pool too small to
            spare one).
    """

    def __init__(
        self, pool: Callable[[], Any], sql: Statements, where: str, hold: Callable[[], bool]
    ) -> None:
        self._pool = pool
        self._sql = sql
        self._where = where
        self._hold = hold
        self._conn: Any = None
        self._one = sql["checkpoint_one"]

    async def write(self, items: Sequence[Checkpoint]) -> list[Outcome]:
        """Write checkpoints (several in one statement); one outcome per item."""
        if len(items) == 1 and _distinct(items[0][1]):  # nothing to merge: a sequential run's
            return [await self._write_alone(items[0])]
        outcomes: list[Outcome] = [None] * len(items)
        pending = list(range(len(items)))
        while pending:
            merged, members, later = merge([items[i] for i in pending])
            try:
                results = await retrying(self._where, functools.partial(self._write, merged))
            except StorageError as exc:
                # One bad value fails the whole statement: write each alone to find it.
                results = [exc] if len(merged) == 1 else [await self._write_alone(item) for item in merged]
            for result, indexes in zip(results, members, strict=True):
                for index in indexes:
                    outcomes[pending[index]] = result
            pending = [pending[i] for i in later]
        return outcomes

    async def _write_alone(self, item: Checkpoint) -> Outcome:
        try:
            return (await retrying(self._where, functools.partial(self._write, (item,))))[0]
        except StorageError as exc:
            return exc

    async def _write(self, merged: Sequence[Checkpoint]) -> list[Outcome]:
        if len(merged) == 1 and len(merged[0][1]) <= ONE_STEPS:  # the common case: plain parameters
            run, steps = merged[0]
            slots = [value for i in range(ONE_STEPS) for value in (steps[i] if i < len(steps) else _NO_STEP)]
            sql, args = self._one, [*run, *slots]
        else:
            runs = columns([row for row, _ in merged], len(RUN_COLUMNS))
            arrays = columns([step for _, rows in merged for step in rows], len(STEP_COLUMNS))
            sql, args = self._sql["checkpoint"], [*runs, *arrays]
        conn = self._conn
        if conn is None or not _usable(conn):
            await self.close()
            conn = self._conn = await self._pool().acquire()
        try:
            written = {row[0] for row in await conn.fetch(sql, *args)}
            lost = [row[0] for row, _ in merged if row[0] not in written]
            owners = dict(await conn.fetch(self._sql["owners"], lost)) if lost else {}
        except BaseException:
            await self.close()  # a lost or busy connection: the pool resets or replaces it
            raise
        if not self._hold():
            await self.close()
        return [
            None if row[0] in written else fenced(row[0], owners.get(row[0]), row[_OWNER])
            for row, _ in merged
        ]

    async def close(self) -> None:
        """Give the held connection back to the pool (if any)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._pool().release(conn)


def _usable(conn: Any) -> bool:
    """Whether a held pool connection still works (the pool takes back one whose server
    connection closed, and then refuses every call on it)."""
    try:
        return not conn.is_closed()
    except driver().InterfaceError:
        return False


def _distinct(steps: Sequence[Row]) -> bool:
    """Whether no two of a checkpoint's step rows have the same seq (one statement cannot
    upsert a row twice)."""
    return len(steps) < 2 or len({step[1] for step in steps}) == len(steps)


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
