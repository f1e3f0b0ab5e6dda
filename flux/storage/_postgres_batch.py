"""Group commit for PostgresStorage: checkpoints that arrive while one is being written are
queued and written together, in one statement, by the next round trip.

The batch statement upserts every run row and step record given as arrays (``unnest``); a run
whose stored owner is not the writer's is fenced off (its row is not returned) and gets a
:class:`LeaseLostError`, while the rest of the batch commits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from flux.errors import LeaseLostError
from flux.storage._sqlite_rows import Row

Checkpoint = tuple[Row, Sequence[Row]]
"""One checkpoint: the encoded run row (input None: keep the stored one) and its step rows."""
Outcome = BaseException | None
Write = Callable[[Sequence[Checkpoint]], Awaitable[list[Outcome]]]

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


class GroupCommit:
    """Writes checkpoints through ``write``, at most one batch at a time; callers that arrive
    meanwhile share the next batch. Each caller returns once its own checkpoint committed."""

    def __init__(self, write: Write) -> None:
        self._write = write
        self._queue: list[tuple[Checkpoint, asyncio.Future[None]]] = []
        self._busy = False
        self._idle = asyncio.Event()
        self._idle.set()

    async def submit(self, item: Checkpoint) -> None:
        """Write ``item``; raises its own outcome (LeaseLostError, StorageError)."""
        if self._busy:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._queue.append((item, future))
            await future
            return
        self._busy = True
        self._idle.clear()
        try:
            outcome = (await self._write([item]))[0]
        finally:
            self._next_batch()
        if outcome is not None:
            raise outcome

    async def wait_idle(self) -> None:
        """Return once every queued checkpoint has been written."""
        await self._idle.wait()

    def _next_batch(self) -> None:
        if self._queue:
            asyncio.get_running_loop().create_task(self._drain())
        else:
            self._busy = False
            self._idle.set()

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    outcomes = await self._write([item for item, _ in batch])
                except Exception as exc:
                    outcomes = [exc] * len(batch)
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if future.done():  # its caller was cancelled
                        continue
                    if outcome is None:
                        future.set_result(None)
                    else:
                        future.set_exception(outcome)
        finally:
            for _, future in self._queue:
                future.cancel()
            self._queue = []
            self._busy = False
            self._idle.set()
