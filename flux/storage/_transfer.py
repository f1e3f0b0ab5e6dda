"""A run as one JSON document, to move it between databases (``flux export`` / ``flux import``).

The document holds the run's header, every step record and every signal::

    {"format": "flux-run/1", "run": {...RunRecord.to_json()...}, "signals": [...]}
"""

from __future__ import annotations

from typing import Any

import attrs

from flux.errors import InvalidRunStateError, RunNotFoundError
from flux.records import JSON, RunRecord, SignalRecord
from flux.status import RunStatus
from flux.storage.protocol import Storage

FORMAT = "flux-run/1"
"""The ``format`` of documents :func:`export_run` writes and :func:`import_run` reads."""


async def export_run(storage: Storage, run_id: str) -> dict[str, JSON]:
    """The stored run ``run_id`` (header, step records, signals) as one JSON-able document.

    Raises:
        RunNotFoundError: no run ``run_id`` is stored.
    """
    run = await storage.load(run_id)
    if run is None:
        raise RunNotFoundError(
            f"no run with id {run_id!r} is stored; check the id (flux list)", run_id=run_id
        )
    signals = await storage.list_signals(run_id)
    return {"format": FORMAT, "run": run.to_json(), "signals": [s.to_json() for s in signals]}


def read_document(document: Any) -> tuple[RunRecord, list[SignalRecord]]:
    """The run and signals of an exported document, checked before anything is written.

    Raises:
        ValueError: the document is not an export of this format; the message names what is wrong.
    """
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        found = document.get("format") if isinstance(document, dict) else type(document).__name__
        raise ValueError(f"not a flux run export: expected format {FORMAT!r}, found {found!r}")
    run = RunRecord.from_json(document.get("run"))
    raw_signals = document.get("signals", [])
    if not isinstance(raw_signals, list):
        raise ValueError(f"the export's 'signals' must be a list, got {type(raw_signals).__name__}")
    signals = [SignalRecord.from_json(raw) for raw in raw_signals]
    for signal in signals:
        if signal.run_id != run.id:
            raise ValueError(f"signal {signal.id} belongs to run {signal.run_id!r}, not to {run.id!r}")
    return run, signals


async def import_run(storage: Storage, document: Any) -> RunRecord:
    """Store an exported run under its own id; returns it (without owner or lease).

    Signals keep their names, payloads, times and which step visit took them (their ids are
    new). A run that was in flight has no owner afterwards: a worker of this database may
    continue it once its workflow is registered there.

    Raises:
        ValueError: the document is malformed (nothing is written).
        InvalidRunStateError: a run with that id is already stored (nothing is written).
    """
    run, signals = read_document(document)
    if await storage.load(run.id) is not None:
        raise InvalidRunStateError(
            f"run {run.id!r} already exists in this database; import refuses to overwrite it "
            "(delete it first, or import into another database)",
            run_id=run.id,
        )
    run = attrs.evolve(run, owner=None, lease_expires_at=None)
    if not signals:
        await storage.create(run)
        return run
    # add_signal stores signals for unfinished runs only: hold the run as a pending run that
    # is not due while they go in, then store it as it was.
    await storage.create(attrs.evolve(run, status=RunStatus.PENDING, wake_at=None))
    ordered = sorted(signals, key=lambda s: (s.consumed_by is None, s.id))
    for signal in ordered:
        await storage.add_signal(run.id, signal.name, signal.payload, signal.created_at)
        if signal.consumed_by is not None:
            await storage.take_signal(run.id, signal.name, signal.consumed_by)
    await storage.save(run)
    return run
