"""Batches of checkpoints for PostgresStorage (its group commit is
:class:`flux.storage._group_commit.GroupCommit`): queued checkpoints are written together, in
one statement, by the next round trip, on a connection held between batches.

The batch statement upserts every run row and step record given as arrays (``unnest``); a run
whose stored owner is not the writer's is fenced off (its row is not returned) and gets a
:class:`LeaseLostError`, while the rest of the batch commits.

A checkpoint that only moves a running run's times (a *tick*: ``updated_at`` and the lease) is
written, when alone in its batch, as a two-column UPDATE fenced by the owner, with its step
records, in a statement made for the shapes of those records (their NULLs written into it,
not bound): about a fifth less server work than the whole row's upsert. It is used only while
the row it was computed from is the one this writer last committed for the run; otherwise, or
when the UPDATE finds no row of that owner, the whole row is written (and fenced) as usual.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from flux.errors import LeaseLostError, StorageError
from flux.storage._group_commit import Outcome
from flux.storage._postgres_conn import driver, retrying, small_reads
from flux.storage._postgres_sql import ONE_STEPS, Statements
from flux.storage._sqlite_rows import Row, StepParams, WrittenRows
from flux.storage._sqlite_schema import RUN_COLUMNS, STEP_COLUMNS

Tick = tuple[int, int]
"""A run's new ``updated_at`` and ``lease_expires_at``, in microseconds."""

Checkpoint = tuple[Row, Tick | None, Sequence[Any]]
"""One checkpoint: the encoded run row (input None: keep the stored one), its tick and its step
records. Without a tick (None), the row holds the new times and the step records are rows
(``STEP_COLUMNS`` order); with one, the row's times are those of the write it builds on and the
step records are :data:`StepParams` (their NULL columns left out, so a tick's statement, made
for their shapes, binds no NULL)."""

Full = tuple[Row, Sequence[Row]]
"""A checkpoint with its whole run row (no tick)."""

_INPUT, _UPDATED, _OWNER, _LEASE = 4, 6, 9, 10  # positions in a run row (RUN_COLUMNS)
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
        self._tick = sql["checkpoint_tick"]
        # The run row this writer last committed, per unfinished run: a tick built on it may
        # write the times alone.
        self._written = WrittenRows()

    async def write(self, items: Sequence[Checkpoint]) -> list[Outcome]:
        """Write checkpoints (several in one statement); one outcome per item."""
        if len(items) == 1 and _distinct(items[0]):  # nothing to merge: a sequential run's
            return [await self._write_alone(items[0])]
        outcomes: list[Outcome] = [None] * len(items)
        pending = list(range(len(items)))
        while pending:
            merged, members, later = merge([items[i] for i in pending])
            try:
                results = await retrying(self._where, functools.partial(self._write, merged))
            except StorageError as exc:
                # One bad value fails the whole statement: write each alone to find it.
                results = [exc] if len(merged) == 1 else [await self._write_full(item) for item in merged]
            for result, indexes in zip(results, members, strict=True):
                for index in indexes:
                    outcomes[pending[index]] = result
            pending = [pending[i] for i in later]
        return outcomes

    async def _write_alone(self, item: Checkpoint) -> Outcome:
        row, tick, steps = item
        if tick is None:
            return await self._write_full((row, steps))
        if self._written.get(row[0]) is row and len(steps) <= ONE_STEPS:
            sql, args = self._tick_statement(row, tick, steps)
            try:
                # Written unless the run has no row held by the checkpoint's owner.
                if await retrying(self._where, functools.partial(self._fetch, sql, args, (row[0],))):
                    return None
            except StorageError as exc:
                self._written.pop(row[0], None)
                return exc
        # Not built on this writer's last write, or that owner has no such row: the whole row.
        outcome = await self._write_full((expand(row, tick), step_rows(steps)))
        if outcome is None:
            self._written.note(row[0], row)  # stored but for its times: later ticks build on it
        return outcome

    def _tick_statement(self, row: Row, tick: Tick, steps: Sequence[StepParams]) -> tuple[str, list[Any]]:
        """A tick's statement and parameters: the one made for the shapes of its step records
        (their NULLs are no parameters), else the one with every column a parameter."""
        sql = self._sql.tick(tuple(shape for shape, _ in steps))
        if sql is None:
            return self._tick, [*tick, row[0], row[_OWNER], *_slots(step_rows(steps))]
        return sql, [*tick, row[0], row[_OWNER], *(value for _, values in steps for value in values)]

    async def _write_full(self, item: Full) -> Outcome:
        try:
            return (await retrying(self._where, functools.partial(self._write, (item,))))[0]
        except StorageError as exc:
            return exc

    async def _write(self, merged: Sequence[Full]) -> list[Outcome]:
        if len(merged) == 1 and len(merged[0][1]) <= ONE_STEPS:  # the common case: plain parameters
            run, steps = merged[0]
            sql, args = self._one, [*run, *_slots(steps)]
        else:
            runs = columns([row for row, _ in merged], len(RUN_COLUMNS))
            arrays = columns([step for _, rows in merged for step in rows], len(STEP_COLUMNS))
            sql, args = self._sql["checkpoint"], [*runs, *arrays]
        run_ids = [row[0] for row, _ in merged]
        written = {row[0] for row in await self._fetch(sql, args, run_ids)}
        lost = [run_id for run_id in run_ids if run_id not in written]
        owners = dict(await self._fetch(self._sql["owners"], [lost], lost)) if lost else {}
        for row, _ in merged:
            self._written.note(row[0], row if row[0] in written else None)
        return [
            None if row[0] in written else fenced(row[0], owners.get(row[0]), row[_OWNER])
            for row, _ in merged
        ]

    async def _fetch(self, sql: str, args: Sequence[Any], run_ids: Sequence[str]) -> Any:
        """``fetch`` on the held connection (acquired first if need be). On an error the
        connection goes back to the pool, and the runs ``run_ids`` are forgotten."""
        conn = self._conn
        if conn is None or not _usable(conn):
            await self.close()
            conn = self._conn = await self._pool().acquire()
            small_reads(conn)  # (a pool given to the storage was not opened by it)
        try:
            found = await conn.fetch(sql, *args)
        except BaseException:
            self.forget(run_ids)
            await self.close()  # a lost or busy connection: the pool resets or replaces it
            raise
        if not self._hold():
            await self.close()
        return found

    def forget(self, run_ids: Iterable[str]) -> None:
        """Forget what was written of these runs (another call changed their rows): their
        next checkpoint writes the whole row."""
        self._written.forget(run_ids)

    async def close(self) -> None:
        """Give the held connection back to the pool (if any)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._pool().release(conn)


def _slots(steps: Sequence[Row]) -> list[Any]:
    """Up to ONE_STEPS step rows as the plain parameters of a one-run statement (NULLs for a
    missing one)."""
    return [value for i in range(ONE_STEPS) for value in (steps[i] if i < len(steps) else _NO_STEP)]


def expand(row: Row, tick: Tick | None) -> Row:
    """The whole run row of a checkpoint: ``row`` with the tick's times (``row`` itself
    without a tick)."""
    if tick is None:
        return row
    return (*row[:_UPDATED], tick[0], *row[_UPDATED + 1 : _LEASE], tick[1], *row[_LEASE + 1 :])


def _usable(conn: Any) -> bool:
    """Whether a held pool connection still works (the pool takes back one whose server
    connection closed, and then refuses every call on it)."""
    try:
        return not conn.is_closed()
    except driver().InterfaceError:
        return False


def _distinct(item: Checkpoint) -> bool:
    """Whether no two of a checkpoint's step records have the same seq (one statement cannot
    upsert a row twice)."""
    _, tick, steps = item
    if len(steps) < 2:
        return True
    seqs = {step[1] for step in steps} if tick is None else {values[1] for _, values in steps}
    return len(seqs) == len(steps)


def step_rows(steps: Sequence[StepParams]) -> list[Row]:
    """Step records given as :data:`StepParams` as whole rows (``STEP_COLUMNS`` order)."""
    rows = []
    for shape, values in steps:
        row: list[Any] = [None] * len(STEP_COLUMNS)
        for column, value in zip(_columns_of(shape), values, strict=True):
            row[column] = value
        rows.append(tuple(row))
    return rows


@functools.cache
def _columns_of(shape: int) -> tuple[int, ...]:
    """The columns a step-record shape holds (bit ``i``: column ``i`` of ``STEP_COLUMNS``)."""
    return tuple(column for column in range(len(STEP_COLUMNS)) if shape >> column & 1)


def merge(items: Sequence[Checkpoint]) -> tuple[list[Full], list[list[int]], list[int]]:
    """Fold checkpoints of one run into one whole row (later fields and step records win), in
    run-id order (so concurrent batches lock rows in the same order).

    Returns the merged checkpoints, which items each one stands for, and the items left for a
    later round (a second checkpoint of a run with another owner, which must be fenced alone).
    """
    rows: dict[str, Row] = {}
    steps: dict[str, dict[int, Row]] = {}
    members: dict[str, list[int]] = {}
    later: list[int] = []
    for index, (row, tick, records) in enumerate(items):
        row = expand(row, tick)
        rows_of_steps = records if tick is None else step_rows(records)
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
        for step in rows_of_steps:
            by_seq[step[1]] = step
        members.setdefault(run_id, []).append(index)
    order = sorted(rows)
    merged: list[Full] = [(rows[run_id], list(steps[run_id].values())) for run_id in order]
    return merged, [members[run_id] for run_id in order], later


def columns(rows: Sequence[Row], width: int) -> list[list[Any]]:
    """Rows as one list per column (the array parameters of a batch statement)."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(column) for column in zip(*rows, strict=True)]


def fenced(run_id: str, stored_owner: str | None, owner: str | None) -> LeaseLostError:
    """The error of a checkpoint fenced off by another owner."""
    return LeaseLostError(f"run {run_id} is now owned by {stored_owner}, not {owner}", run_id=run_id)
