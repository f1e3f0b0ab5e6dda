"""Records to SQLite rows and back.

Datetimes become integer microseconds since the Unix epoch, so they sort and compare in SQL and
come back exactly, as timezone-aware UTC. JSON values become compact text (NULL for None and
for empty collections). A row that cannot be read back raises :class:`StorageCorruptedError`
naming the run and the column.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from flux.errors import StorageCorruptedError, StorageError
from flux.records import JSON, ErrorInfo, LogLine, RunRecord, SignalRecord, StepRecord
from flux.serde import dumps, loads
from flux.status import RunStatus, StepStatus
from flux.storage._common import FINISHED, remember
from flux.storage._sqlite_schema import RUN_COLUMNS, SIGNAL_COLUMNS, STEP_COLUMNS

Row = tuple[Any, ...]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


# --- encoding (checked here, so a bad value fails its own caller before any SQL runs) ------


def micros(value: datetime | None, what: str = "a datetime") -> int | None:
    """``value`` as integer microseconds since the epoch (None stays None)."""
    if value is None:
        return None
    try:
        return (value - _EPOCH) // _MICROSECOND
    except TypeError:
        raise StorageError(
            f"{what} is {value!r}, a naive datetime or not a datetime; flux stores timezone-aware "
            "datetimes only: use datetime.now(UTC) or value.replace(tzinfo=UTC)"
        ) from None


def _json(value: JSON, what: str) -> str:
    try:
        return dumps(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise StorageError(
            f"{what} cannot be stored ({exc}): flux stores JSON values only (dict with str keys, "
            "list, str, int, float, bool, None); convert it first"
        ) from None


def _json_or_null(value: JSON, what: str) -> str | None:
    return None if value is None else _json(value, what)


def encode_input(run: RunRecord) -> str | None:
    """The text of a run's input column."""
    return _json_or_null(run.input, f"the input of run {run.id}")


# The hot path encodes without building any message; only a failure looks again, field by
# field, to say which value is wrong.
_BAD_VALUE = (TypeError, ValueError, OverflowError, RecursionError)
_RUN_CHECKS = (
    ("created_at", micros), ("updated_at", micros), ("finished_at", micros),
    ("lease_expires_at", micros), ("wake_at", micros), ("deadline_at", micros),
    ("error", lambda v, what: None if v is None else _json(v.to_json(), what)),
    ("cancel_requested", lambda v, what: None if v is None else _json(dict(v), what)),
    ("labels", lambda v, what: _json(dict(v), what)),
)  # fmt: skip
_STEP_CHECKS = (
    ("started_at", micros), ("finished_at", micros), ("wake_at", micros),
    ("error", lambda v, what: None if v is None else _json(v.to_json(), what)),
    ("output", _json_or_null), ("data_set", lambda v, what: _json(dict(v), what)),
    ("data_unset", lambda v, what: _json(list(v), what)), ("actions", lambda v, what: _json(dict(v), what)),
)  # fmt: skip


def _explain(record: Any, checks: Any, where: str) -> StorageError:
    """The StorageError naming the first field of ``record`` that cannot be stored."""
    for name, check in checks:
        try:
            check(getattr(record, name), f"{name} of {where}")
        except StorageError as exc:
            return exc
    return StorageError(f"{where} cannot be stored")  # pragma: no cover - a check always fails


def _us(value: datetime | None) -> int | None:
    return None if value is None else (value - _EPOCH) // _MICROSECOND


def encode_run(run: RunRecord, input_text: str | None) -> Row:
    """The runs-table row of ``run`` (its step records aside), in ``RUN_COLUMNS`` order.

    ``input_text`` is :func:`encode_input` of the run (the caller may have it already).
    """
    error, cancel, labels = run.error, run.cancel_requested, run.labels
    try:
        return (
            run.id, run.workflow, run.fingerprint, str(run.status), input_text, _us(run.created_at),
            _us(run.updated_at), _us(run.finished_at), None if error is None else dumps(error.to_json()),
            run.owner, _us(run.lease_expires_at), _us(run.wake_at), _us(run.deadline_at),
            None if cancel is None else dumps(dict(cancel)), dumps(dict(labels)) if labels else None,
        )  # fmt: skip
    except _BAD_VALUE:
        raise _explain(run, _RUN_CHECKS, f"run {run.id}") from None


def _object(mapping: Mapping[str, JSON]) -> str:
    return dumps(mapping if type(mapping) is dict else dict(mapping))


def encode_step(run_id: str, step: StepRecord) -> Row:
    """The step-records row of one visit, in ``STEP_COLUMNS`` order."""
    error, output = step.error, step.output
    try:
        return (
            run_id, step.seq, step.step, str(step.status), step.attempts,
            None if (started := step.started_at) is None else recent_micros(started),
            None if (finished := step.finished_at) is None else recent_micros(finished),
            None if error is None else dumps(error.to_json()),
            None if output is None else dumps(output),
            _object(step.data_set) if step.data_set else None,
            dumps(list(step.data_unset)) if step.data_unset else None,
            step.condition, _object(step.actions) if step.actions else None, _us(step.wake_at),
            step.waiting_for, _encode_logs(step.logs) if step.logs else None,
        )  # fmt: skip
    except _BAD_VALUE:
        raise _explain(step, _STEP_CHECKS, f"step {step.step!r} (seq {step.seq}) of run {run_id}") from None


StepParams = tuple[int, tuple[Any, ...]]
"""A step record as parameters: the shape (bit ``i`` set: column ``i`` of ``STEP_COLUMNS``
is not NULL) and the values of its non-NULL columns, in column order."""

_ALWAYS = 0b11111  # run_id, seq, step, status, attempts
_STARTED, _FINISHED, _ERROR, _OUTPUT, _DATA_SET, _DATA_UNSET = (1 << i for i in range(5, 11))
_CONDITION, _ACTIONS, _WAKE, _WAITING, _LOGS = (1 << i for i in range(11, 16))


_recent: list[tuple[datetime | None, int]] = [(None, 0)] * 4


def recent_micros(value: datetime) -> int:
    """``value`` in microseconds; the last few datetimes converted are remembered, since a
    checkpoint often holds the datetime that the one before converted (a visit's start)."""
    recent = _recent
    for entry in recent:
        if entry[0] is value:
            return entry[1]
    micros = (value - _EPOCH) // _MICROSECOND
    recent.insert(0, (value, micros))  # each entry one object: safe for several threads
    del recent[4:]
    return micros


class WrittenRows(dict[str, Row]):
    """The runs-table row a writer last committed, per unfinished run. A tick (a checkpoint
    that writes only a running run's times) is right only while the stored row is the one it
    was computed from, so the writer keeps this, and forgets a run whose row anything else
    may have changed."""

    def note(self, run_id: str, row: Row | None) -> None:
        """``row`` is now committed for ``run_id`` (None: unknown; then, or for a finished
        run, the run is forgotten)."""
        if row is None or row[3] in FINISHED_VALUES:  # row[3]: the status (RUN_COLUMNS)
            self.pop(run_id, None)
        else:
            remember(self, run_id, row)

    def forget(self, run_ids: Iterable[str]) -> None:
        """Forget these runs: their next checkpoint writes the whole row."""
        for run_id in run_ids:
            self.pop(run_id, None)


FINISHED_VALUES = frozenset(status.value for status in FINISHED)
"""The finished statuses as a row holds them."""


def encode_tick(run: RunRecord) -> tuple[int, int] | None:
    """``run``'s updated_at and lease_expires_at in microseconds; None if either is missing
    or cannot be stored (:func:`encode_run` then says why)."""
    updated, lease = run.updated_at, run.lease_expires_at
    if lease is None:
        return None
    try:
        return recent_micros(updated), (lease - _EPOCH) // _MICROSECOND
    except _BAD_VALUE:
        return None


def step_params(run_id: str, step: StepRecord) -> StepParams:
    """One visit's row as :data:`StepParams`: each value encoded once, NULLs not bound at all
    (binding a None costs Python's sqlite3 module ten times an integer; the statement says
    NULL instead, see ``Statements.upsert_steps``)."""
    try:
        values = [run_id, step.seq, step.step, str(step.status), step.attempts]
        shape = _ALWAYS
        if (at := step.started_at) is not None:
            values.append(recent_micros(at))
            shape |= _STARTED
        if (at := step.finished_at) is not None:
            values.append(recent_micros(at))
            shape |= _FINISHED
        if (error := step.error) is not None:
            values.append(dumps(error.to_json()))
            shape |= _ERROR
        if (output := step.output) is not None:
            values.append(dumps(output))
            shape |= _OUTPUT
        if data_set := step.data_set:
            values.append(_object(data_set))
            shape |= _DATA_SET
        if data_unset := step.data_unset:
            values.append(dumps(list(data_unset)))
            shape |= _DATA_UNSET
        if (condition := step.condition) is not None:
            values.append(condition)  # a bool: sqlite3 binds it as 1 or 0
            shape |= _CONDITION
        if actions := step.actions:
            values.append(_object(actions))
            shape |= _ACTIONS
        if (at := step.wake_at) is not None:
            values.append((at - _EPOCH) // _MICROSECOND)
            shape |= _WAKE
        if (waiting := step.waiting_for) is not None:
            values.append(waiting)
            shape |= _WAITING
        if logs := step.logs:
            values.append(_encode_logs(logs))
            shape |= _LOGS
    except _BAD_VALUE:
        raise _explain(step, _STEP_CHECKS, f"step {step.step!r} (seq {step.seq}) of run {run_id}") from None
    return shape, tuple(values)


def _encode_logs(logs: tuple[LogLine, ...]) -> str:
    """A visit's log lines as a JSON list of ``[level, microseconds, message]``."""
    return dumps([[line.level, _us(line.time), line.message] for line in logs])


def _logs(value: Any) -> tuple[LogLine, ...]:
    decoded = _json_value(value)
    if decoded is None:
        return ()
    if not isinstance(decoded, list):
        raise TypeError(f"expected a JSON list of log lines, found {decoded!r}")
    return tuple(
        LogLine(level=_text(level), time=_req_time(at), message=_text(text)) for level, at, text in decoded
    )


def encode_json(value: JSON, what: str) -> str | None:
    """A JSON column's text (NULL for None)."""
    return _json_or_null(value, what)


# --- decoding --------------------------------------------------------------------------------


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text, found {type(value).__name__} {value!r}")
    return value


def _opt_text(value: Any) -> str | None:
    return None if value is None else _text(value)


def _int(value: Any) -> int:
    if not isinstance(value, int):
        raise TypeError(f"expected an integer, found {type(value).__name__} {value!r}")
    return value


def _opt_int(value: Any) -> int | None:
    return None if value is None else _int(value)


def _time(value: Any) -> datetime | None:
    return None if value is None else _EPOCH + timedelta(microseconds=_int(value))


def _req_time(value: Any) -> datetime:
    if value is None:
        raise ValueError("a required time is missing")
    return _EPOCH + timedelta(microseconds=_int(value))


def _json_value(value: Any) -> JSON:
    return None if value is None else loads(_text(value))


def _json_object(value: Any) -> dict[str, JSON] | None:
    decoded = _json_value(value)
    if decoded is not None and not isinstance(decoded, dict):
        raise TypeError(f"expected a JSON object, found {decoded!r}")
    return decoded


def _mapping(value: Any) -> dict[str, JSON]:
    return _json_object(value) or {}


def _names(value: Any) -> tuple[str, ...]:
    decoded = _json_value(value)
    if decoded is None:
        return ()
    if not isinstance(decoded, list):
        raise TypeError(f"expected a JSON list, found {decoded!r}")
    return tuple(decoded)


def _error(value: Any) -> ErrorInfo | None:
    decoded = _json_object(value)
    return None if decoded is None else ErrorInfo.from_json(decoded)


def _condition(value: Any) -> bool | None:
    return None if value is None else bool(_int(value))


Decoder = Callable[[Any], Any]

_RUN_DECODERS: tuple[Decoder, ...] = (
    _text, _text, _text, RunStatus, _json_value, _req_time, _req_time, _time, _error, _opt_text,
    _time, _time, _time, _json_object, _mapping,
)  # fmt: skip
_STEP_DECODERS: tuple[Decoder, ...] = (
    _text, _int, _text, StepStatus, _int, _time, _time, _error, _json_value, _mapping, _names,
    _condition, _mapping, _time, _opt_text, _logs,
)  # fmt: skip
_SIGNAL_DECODERS: tuple[Decoder, ...] = (_int, _text, _text, _json_value, _req_time, _opt_int)


def _corrupted(row: Row, decoders: Sequence[Decoder], columns: Sequence[str], table: str) -> Exception:
    """The StorageCorruptedError naming the first column of ``row`` that cannot be decoded."""
    run_id = row[1] if table == "signals" else row[0]
    where = f" of the step record seq {row[1]!r}" if table == "steps" else ""
    for decode, column, value in zip(decoders, columns, row, strict=True):
        try:
            decode(value)
        except Exception as exc:
            return StorageCorruptedError(
                f"run {run_id!r}: column {table}.{column}{where} cannot be read ({exc}). The "
                "database was changed outside flux or is damaged: restore it from a backup, or "
                f"remove the run with `await storage.delete({run_id!r})`."
            )
    return StorageCorruptedError(f"run {run_id!r}: a {table} row cannot be read")  # pragma: no cover


def decode_step(row: Row) -> StepRecord:
    """A step record from its row."""
    try:
        values = [decode(value) for decode, value in zip(_STEP_DECODERS, row, strict=True)]
        return StepRecord(**dict(zip(STEP_COLUMNS[1:], values[1:], strict=True)))
    except Exception:
        raise _corrupted(row, _STEP_DECODERS, STEP_COLUMNS, "steps") from None


def decode_run(row: Row, steps: Sequence[Row] = ()) -> RunRecord:
    """A run record from its row and its step rows (in seq order)."""
    records = tuple(decode_step(step) for step in steps)
    try:
        values = [decode(value) for decode, value in zip(_RUN_DECODERS, row, strict=True)]
        return RunRecord(**dict(zip(RUN_COLUMNS, values, strict=True)), steps=records)
    except Exception:
        raise _corrupted(row, _RUN_DECODERS, RUN_COLUMNS, "runs") from None


def decode_signal(row: Row) -> SignalRecord:
    """A signal record from its row."""
    try:
        values = [decode(value) for decode, value in zip(_SIGNAL_DECODERS, row, strict=True)]
        return SignalRecord(**dict(zip(SIGNAL_COLUMNS, values, strict=True)))
    except Exception:
        raise _corrupted(row, _SIGNAL_DECODERS, SIGNAL_COLUMNS, "signals") from None


def from_micros(value: int | None) -> datetime | None:
    """The inverse of :func:`micros`."""
    return _time(value)
