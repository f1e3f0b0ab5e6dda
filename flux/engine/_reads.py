"""The engine's read operations: a run's result now (``get``), when it ends (``wait_result``),
and stored runs (``list``).

They are methods of :class:`~flux.FluxEngine`; this module keeps them apart from running,
control and durability, one concept per module.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence

from flux._duration import to_seconds
from flux.clock import Clock
from flux.engine._work import TimeWaits
from flux.errors import RunNotFoundError
from flux.records import RunFilter, RunRecord
from flux.result import RunResult
from flux.status import RunStatus
from flux.storage.protocol import Storage


class ReadOps:
    """Reading runs (mixed into :class:`~flux.FluxEngine`)."""

    storage: Storage
    clock: Clock
    poll_interval: float
    _finished: dict[str, asyncio.Event]
    _waits: TimeWaits
    start_engine: Callable[[], Awaitable[None]]

    async def wait_result(self, run_id: str, timeout: float | None = None) -> RunResult:
        """Wait until the run has finished (completed, failed, rolled back or cancelled).

        Runs driven in this process are noticed at once; runs driven elsewhere within
        ``poll_interval``. Raises ``TimeoutError`` after ``timeout`` seconds, naming the run, the
        time waited and the run's status then, and :class:`RunNotFoundError` for an unknown id.
        Both times are measured on the engine's clock (a ``FakeClock`` moves them in tests).
        """
        if timeout is not None:
            timeout = to_seconds(timeout, "timeout", zero=True)
        run = await self._load(run_id)  # a finished run is returned even with timeout=0
        if run.status.finished:
            return RunResult.from_record(run)
        try:
            async with self.clock.timeout(timeout):
                while True:
                    # Before looking: a run that ends while we look sets it, and is not missed.
                    done = self._finished.setdefault(run_id, asyncio.Event())
                    run = await self._load(run_id)
                    if run.status.finished:
                        return RunResult.from_record(run)
                    await self._waits.wait(done, self.poll_interval)
        except TimeoutError:
            if timeout is None:
                raise
            raise TimeoutError(_still_unfinished(run, timeout)) from None

    async def get(self, run_id: str) -> RunResult:
        """The stored state of a run. Raises :class:`RunNotFoundError` for an unknown id."""
        return RunResult.from_record(await self._load(run_id))

    async def list(
        self,
        name: str | None = None,
        status: str | Sequence[str] | None = None,
        limit: int | None = None,
        offset: int = 0,
        labels: Mapping[str, str] | None = None,
    ) -> list[RunResult]:
        """Stored runs, newest first, filtered by workflow name, status (one or several) and
        ``labels`` (runs carrying every given label)."""
        await self.start_engine()
        wanted = RunFilter(workflow=name, status=status, labels=labels, limit=limit, offset=offset)
        runs = await self.storage.list(wanted)
        return [RunResult.from_record(run) for run in runs]

    async def _load(self, run_id: str) -> RunRecord:
        await self.start_engine()
        run = await self.storage.load(run_id)
        if run is None:
            raise RunNotFoundError(
                f"no run with id {run_id!r} is stored; check the id (engine.list() shows runs)",
                run_id=run_id,
            )
        return run


_WHAT_MOVES_IT = {
    RunStatus.PENDING: "no worker has started it yet: run one with engine.worker()",
    RunStatus.SUSPENDED: "it waits for a signal or a timer, and a worker (engine.worker()) goes on when due",
}


def _still_unfinished(run: RunRecord, timeout: float) -> str:
    """The message of a ``wait_result`` that timed out."""
    hint = _WHAT_MOVES_IT.get(run.status, "a step is still in progress")
    return (
        f"wait_result: run {run.id} of workflow {run.workflow!r} did not finish within {timeout:g} s: "
        f"it is {run.status}; {hint}. Wait longer, or look at it later with engine.get({run.id!r})"
    )
