"""What storage keeps: frozen records of runs, step visits and errors.

The records are plain values. A run's ``data`` and ``outputs`` are not stored as a whole: each
step record carries the data keys that step changed, and :attr:`RunRecord.data` replays them in
order. That keeps a checkpoint's cost proportional to what the step changed.
"""

from __future__ import annotations

import traceback as _traceback
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from types import MappingProxyType
from typing import Any, TypeVar

import attrs

from flux.status import RunStatus, StepStatus

JSON = Any
"""A value made of dicts with string keys, lists, strings, numbers, booleans and None."""

EMPTY: Mapping[str, Any] = MappingProxyType({})
"""The shared empty mapping of records that changed no data and recorded no actions."""


def frozen_labels(labels: Mapping[str, str] | None) -> Mapping[str, str]:
    """``labels`` as a read-only mapping (shared when it already is one; EMPTY for none)."""
    if isinstance(labels, MappingProxyType):
        return labels
    return MappingProxyType(dict(labels)) if labels else EMPTY


# Step visits whose data changes and outputs count towards the run's state.
_EFFECTIVE = frozenset(
    {StepStatus.COMPLETED, StepStatus.SKIPPED, StepStatus.COMPENSATING, StepStatus.COMPENSATED}
)
_HAS_OUTPUT = frozenset({StepStatus.COMPLETED, StepStatus.COMPENSATING, StepStatus.COMPENSATED})


@attrs.frozen(kw_only=True)
class ErrorInfo:
    """A recorded failure: never a live exception, always text that survives storage.

    ``compensation`` holds the error of a compensation that also failed, in the same shape.
    """

    type: str
    message: str
    step: str | None = None
    attempt: int | None = None
    traceback: str = ""
    compensation: ErrorInfo | None = None

    @classmethod
    def from_exception(
        cls, exc: BaseException, *, step: str | None = None, attempt: int | None = None
    ) -> ErrorInfo:
        """Capture ``exc`` (type name, message and formatted traceback)."""
        text = "".join(_traceback.format_exception(type(exc), exc, exc.__traceback__))
        return cls(type=type(exc).__name__, message=str(exc), step=step, attempt=attempt, traceback=text)

    def to_json(self) -> dict[str, JSON]:
        """A JSON-able dict of every field."""
        return {
            "type": self.type,
            "message": self.message,
            "step": self.step,
            "attempt": self.attempt,
            "traceback": self.traceback,
            "compensation": self.compensation.to_json() if self.compensation else None,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, JSON]) -> ErrorInfo:
        """The inverse of :meth:`to_json`."""
        comp = raw.get("compensation")
        return cls(
            type=str(raw["type"]),
            message=str(raw["message"]),
            step=raw.get("step"),
            attempt=raw.get("attempt"),
            traceback=str(raw.get("traceback") or ""),
            compensation=cls.from_json(comp) if comp else None,
        )


@attrs.frozen(kw_only=True)
class LogLine:
    """One line a handler logged through ``ctx.log``, kept with its step record.

    ``level`` is the logging level's name in lower case (``"info"``, ``"warning"``,
    ``"error"``...); ``time`` comes from the engine's clock.
    """

    level: str
    time: datetime
    message: str

    def to_json(self) -> dict[str, JSON]:
        """``{"level": ..., "time": <ISO 8601>, "message": ...}``."""
        return {"level": self.level, "time": self.time.isoformat(), "message": self.message}

    @classmethod
    def from_json(cls, raw: Mapping[str, JSON]) -> LogLine:
        """The inverse of :meth:`to_json`."""
        return cls(
            level=str(raw["level"]),
            time=datetime.fromisoformat(str(raw["time"])),
            message=str(raw["message"]),
        )


# StepRecord and RunRecord keep their fields in a __dict__ (slots=False): the engine makes
# several per step, and a dict-based record can be built from one dict literal (see
# ``step_visit`` and ``revise``), at a third of the cost of the generated frozen __init__.


@attrs.frozen(kw_only=True, slots=False)
class StepRecord:
    """One visit of one step in a run.

    Attributes:
        seq: the visit's index in the run (0-based, in start order); the storage key with the run id.
        step: the step's name.
        status: where the visit stands.
        attempts: attempts started so far (1-based count).
        output: the handler's return value once completed (JSON).
        data_set / data_unset: the top-level ``ctx.data`` keys this visit set or removed.
        condition: the recorded result of the step's ``when`` predicate (None: no predicate).
        actions: recorded results of ``ctx.action`` calls made inside the step, by action name.
        wake_at: when a sleeping step, a waiting step's timeout or a stored retry delay is due.
        waiting_for: the signal a suspended visit waits for.
        logs: the lines its handler logged through ``ctx.log``, across attempts, bounded (see
            ``FluxEngine(log_limits=...)``).
    """

    seq: int
    step: str
    status: StepStatus
    attempts: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: ErrorInfo | None = None
    output: JSON = None
    data_set: Mapping[str, JSON] = EMPTY
    data_unset: tuple[str, ...] = ()
    condition: bool | None = None
    actions: Mapping[str, JSON] = EMPTY
    wake_at: datetime | None = None
    waiting_for: str | None = None
    logs: tuple[LogLine, ...] = ()

    @property
    def duration(self) -> float | None:
        """Seconds from start to finish, or None while unfinished."""
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    def to_json(self) -> dict[str, JSON]:
        """A JSON-able dict of every field (datetimes as ISO 8601 text)."""
        return {
            "seq": self.seq,
            "step": self.step,
            "status": self.status.value,
            "attempts": self.attempts,
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "error": None if self.error is None else self.error.to_json(),
            "output": self.output,
            "data_set": dict(self.data_set),
            "data_unset": list(self.data_unset),
            "condition": self.condition,
            "actions": dict(self.actions),
            "wake_at": _iso(self.wake_at),
            "waiting_for": self.waiting_for,
            "logs": [line.to_json() for line in self.logs],
        }

    @classmethod
    def from_json(cls, raw: JSON) -> StepRecord:
        """The inverse of :meth:`to_json`.

        Raises:
            ValueError: ``raw`` is not such a dict; the message names the field.
        """
        doc = _Doc(raw, "step record")
        return cls(
            seq=doc.get("seq", int),
            step=doc.get("step", str),
            status=doc.enum("status", StepStatus),
            attempts=doc.get("attempts", int, 0),
            started_at=doc.time("started_at"),
            finished_at=doc.time("finished_at"),
            error=doc.error("error"),
            output=doc.raw.get("output"),
            data_set=doc.get("data_set", dict, {}),
            data_unset=tuple(doc.get("data_unset", list, [])),
            condition=doc.get("condition", bool, None),
            actions=doc.get("actions", dict, {}),
            wake_at=doc.time("wake_at"),
            waiting_for=doc.get("waiting_for", str, None),
            logs=tuple(LogLine.from_json(line) for line in doc.get("logs", list, [])),
        )


@attrs.frozen(kw_only=True, slots=False)
class RunRecord:
    """A stored run: its own fields plus its step visits in ``seq`` order.

    ``owner`` and ``lease_expires_at`` name the process driving the run while it is in flight.
    ``wake_at`` is when a pending or suspended run is next due (a timer, a stored retry, a
    signal that arrived, its deadline); ``deadline_at`` is when it is cancelled if unfinished;
    ``cancel_requested`` (``{"reason": ..., "compensate": ...}``) is a cancellation asked for
    while another process drives the run. ``labels`` (str to str, read-only) are set when the
    run is created and never change; ``checkpoint`` does not write them.
    """

    id: str
    workflow: str
    fingerprint: str
    status: RunStatus
    input: JSON = None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None
    error: ErrorInfo | None = None
    owner: str | None = None
    lease_expires_at: datetime | None = None
    wake_at: datetime | None = None
    deadline_at: datetime | None = None
    cancel_requested: Mapping[str, JSON] | None = None
    labels: Mapping[str, str] = attrs.field(default=EMPTY, converter=frozen_labels)
    steps: tuple[StepRecord, ...] = ()

    @property
    def data(self) -> dict[str, JSON]:
        """``ctx.data`` as the recorded step visits left it."""
        return replay_data(self.steps)

    @property
    def outputs(self) -> dict[str, JSON]:
        """Each finished step's output, by step name (a later visit wins)."""
        return replay_outputs(self.steps)

    @property
    def duration(self) -> float | None:
        """Seconds from creation to finish, or None while unfinished."""
        if self.finished_at is None:
            return None
        return (self.finished_at - self.created_at).total_seconds()

    def to_json(self) -> dict[str, JSON]:
        """The run and its step records as one JSON-able dict (datetimes as ISO 8601 text).

        >>> from datetime import UTC, datetime
        >>> now = datetime(2030, 1, 1, tzinfo=UTC)
        >>> run = RunRecord(id="r1", workflow="wf", fingerprint="fp", status=RunStatus.COMPLETED,
        ...                 created_at=now, updated_at=now, labels={"tenant": "acme"})
        >>> RunRecord.from_json(run.to_json()) == run
        True
        """
        return {
            "id": self.id,
            "workflow": self.workflow,
            "fingerprint": self.fingerprint,
            "status": self.status.value,
            "input": self.input,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "finished_at": _iso(self.finished_at),
            "error": None if self.error is None else self.error.to_json(),
            "owner": self.owner,
            "lease_expires_at": _iso(self.lease_expires_at),
            "wake_at": _iso(self.wake_at),
            "deadline_at": _iso(self.deadline_at),
            "cancel_requested": None if self.cancel_requested is None else dict(self.cancel_requested),
            "labels": dict(self.labels),
            "steps": [step.to_json() for step in self.steps],
        }

    @classmethod
    def from_json(cls, raw: JSON) -> RunRecord:
        """The inverse of :meth:`to_json`.

        Raises:
            ValueError: ``raw`` is not such a dict; the message names the field that is wrong.
        """
        doc = _Doc(raw, "run")
        steps = doc.get("steps", list, [])
        labels = doc.get("labels", dict, {})
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
            raise ValueError(f"run field 'labels' must map strings to strings, got {labels!r}")
        return cls(
            id=doc.get("id", str),
            workflow=doc.get("workflow", str),
            fingerprint=doc.get("fingerprint", str),
            status=doc.enum("status", RunStatus),
            input=doc.raw.get("input"),
            created_at=doc.required_time("created_at"),
            updated_at=doc.required_time("updated_at"),
            finished_at=doc.time("finished_at"),
            error=doc.error("error"),
            owner=doc.get("owner", str, None),
            lease_expires_at=doc.time("lease_expires_at"),
            wake_at=doc.time("wake_at"),
            deadline_at=doc.time("deadline_at"),
            cancel_requested=doc.get("cancel_requested", dict, None),
            labels=labels,
            steps=tuple(StepRecord.from_json(step) for step in steps),
        )


_R = TypeVar("_R", StepRecord, RunRecord)
_new = object.__new__
_set = object.__setattr__
_STEP_FIELDS = frozenset(field.name for field in attrs.fields(StepRecord))
_RUN_FIELDS = frozenset(field.name for field in attrs.fields(RunRecord))


def _built(cls: type[_R], fields: dict[str, Any]) -> _R:
    record = _new(cls)
    _set(record, "__dict__", fields)
    return record


def step_visit(
    seq: int,
    step: str,
    status: StepStatus,
    attempts: int,
    started_at: datetime | None,
    finished_at: datetime | None = None,
    output: JSON = None,
    data_set: Mapping[str, JSON] = EMPTY,
    data_unset: tuple[str, ...] = (),
    condition: bool | None = None,
    actions: Mapping[str, JSON] = EMPTY,
) -> StepRecord:
    """``StepRecord(...)`` without error, wake time, wait or logs, for the engine's hot path.

    The same record as the constructor makes, built from one dict instead of the generated
    keyword ``__init__`` (a step makes two of these per attempt).
    """
    return _built(
        StepRecord,
        {
            "seq": seq,
            "step": step,
            "status": status,
            "attempts": attempts,
            "started_at": started_at,
            "finished_at": finished_at,
            "error": None,
            "output": output,
            "data_set": data_set,
            "data_unset": data_unset,
            "condition": condition,
            "actions": actions,
            "wake_at": None,
            "waiting_for": None,
            "logs": (),
        },
    )


def revise(record: _R, **changes: Any) -> _R:
    """``attrs.evolve`` for a :class:`StepRecord` or :class:`RunRecord`, at a tenth of its cost.

    Raises:
        TypeError: a change names no field of the record.
    """
    names = _STEP_FIELDS if type(record) is StepRecord else _RUN_FIELDS
    if not names.issuperset(changes):
        unknown = ", ".join(sorted(set(changes) - names))
        raise TypeError(f"{type(record).__name__} has no field {unknown}")
    if "labels" in changes:
        changes["labels"] = frozen_labels(changes["labels"])
    return _built(type(record), {**record.__dict__, **changes})


def checkpointed(
    run: RunRecord, updated_at: datetime, lease_expires_at: datetime, changes: Mapping[str, Any]
) -> RunRecord:
    """``run`` as the engine checkpoints it: updated at ``updated_at``, its lease renewed to
    ``lease_expires_at``, then ``changes`` applied (as :func:`revise`; every checkpoint makes
    one, so the common case, no changes, is kept cheap)."""
    if changes:
        changes = {"updated_at": updated_at, "lease_expires_at": lease_expires_at, **changes}
        return revise(run, **changes)
    return _built(RunRecord, {**run.__dict__, "updated_at": updated_at, "lease_expires_at": lease_expires_at})


def replay_data(steps: Iterable[StepRecord], base: Mapping[str, JSON] | None = None) -> dict[str, JSON]:
    """Apply the recorded data changes of every effective visit, in order (onto ``base``)."""
    data: dict[str, JSON] = dict(base or {})
    for record in steps:
        if record.status in _EFFECTIVE:
            data.update(record.data_set)
            for key in record.data_unset:
                data.pop(key, None)
    return data


def replay_outputs(steps: Iterable[StepRecord]) -> dict[str, JSON]:
    """Collect the outputs of completed visits (later visits overwrite earlier ones).

    Map items (``map[i]``) are left out: their results make up the map step's output.
    """
    return {
        record.step: record.output
        for record in steps
        if record.status in _HAS_OUTPUT and record.output is not None and "[" not in record.step
    }


StatusSpec = str | RunStatus | Sequence[str | RunStatus] | frozenset[RunStatus]
"""One run status or several."""


def _statuses(value: StatusSpec | None) -> frozenset[RunStatus] | None:
    if value is None:
        return None
    items = [value] if isinstance(value, str) else list(value)
    try:
        return frozenset(RunStatus(item) for item in items)
    except ValueError:
        known = ", ".join(s.value for s in RunStatus)
        raise ValueError(f"unknown run status in {value!r}; use one of: {known}") from None


@attrs.frozen(kw_only=True)
class SignalRecord:
    """A signal stored for a run; ``consumed_by`` is the seq of the step visit that took it."""

    id: int
    run_id: str
    name: str
    payload: JSON = None
    created_at: datetime
    consumed_by: int | None = None

    def to_json(self) -> dict[str, JSON]:
        """A JSON-able dict of every field (``created_at`` as ISO 8601 text)."""
        return {
            "id": self.id,
            "run_id": self.run_id,
            "name": self.name,
            "payload": self.payload,
            "created_at": _iso(self.created_at),
            "consumed_by": self.consumed_by,
        }

    @classmethod
    def from_json(cls, raw: JSON) -> SignalRecord:
        """The inverse of :meth:`to_json`; raises ``ValueError`` naming a wrong field."""
        doc = _Doc(raw, "signal")
        return cls(
            id=doc.get("id", int),
            run_id=doc.get("run_id", str),
            name=doc.get("name", str),
            payload=doc.raw.get("payload"),
            created_at=doc.required_time("created_at"),
            consumed_by=doc.get("consumed_by", int, None),
        )


@attrs.frozen(kw_only=True)
class RunFilter:
    """What :meth:`Storage.list` returns: newest first, then ``offset`` and ``limit``.

    ``status`` is one status or several; ``labels`` keeps runs that carry every given label
    (key and value); ``None`` fields do not filter.
    """

    workflow: str | None = None
    status: frozenset[RunStatus] | None = attrs.field(default=None, converter=_statuses)
    labels: Mapping[str, str] | None = attrs.field(
        default=None, converter=attrs.converters.optional(frozen_labels)
    )
    limit: int | None = None
    offset: int = 0

    def __attrs_post_init__(self) -> None:
        if self.limit is not None and self.limit < 0:
            raise ValueError(f"limit must be >= 0 or None, got {self.limit}")
        if self.offset < 0:
            raise ValueError(f"offset must be >= 0, got {self.offset}")

    def matches(self, run: RunRecord) -> bool:
        """True when ``run`` passes the name, status and label filters (limit/offset aside)."""
        if self.workflow is not None and run.workflow != self.workflow:
            return False
        if self.labels and any(run.labels.get(k) != v for k, v in self.labels.items()):
            return False
        return self.status is None or run.status in self.status


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


_MISSING: Any = object()


class _Doc:
    """Typed reads from one decoded JSON object, with errors that name the field."""

    def __init__(self, raw: JSON, what: str) -> None:
        if not isinstance(raw, dict):
            raise ValueError(f"a {what} must be a JSON object, got {type(raw).__name__} {raw!r:.60}")
        self.raw: dict[str, JSON] = raw
        self.what = what

    def get(self, key: str, kind: type[Any], default: Any = _MISSING) -> Any:
        value = self.raw.get(key, _MISSING)
        if value is _MISSING or (value is None and default is not _MISSING):
            if default is _MISSING:
                raise ValueError(f"{self.what} field {key!r} is missing")
            return default
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValueError(
                f"{self.what} field {key!r} must be {kind.__name__}, got {type(value).__name__} {value!r:.60}"
            )
        return value

    def enum(self, key: str, kind: type[Any]) -> Any:
        value = self.get(key, str)
        try:
            return kind(value)
        except ValueError:
            known = ", ".join(item.value for item in kind)
            raise ValueError(f"{self.what} field {key!r} is {value!r}; use one of: {known}") from None

    def time(self, key: str) -> datetime | None:
        text = self.get(key, str, None)
        if text is None:
            return None
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{self.what} field {key!r} is not an ISO 8601 time: {text!r}") from None
        if value.tzinfo is None:
            raise ValueError(f"{self.what} field {key!r} has no timezone: {text!r} (add +00:00)")
        return value

    def required_time(self, key: str) -> datetime:
        value = self.time(key)
        if value is None:
            raise ValueError(f"{self.what} field {key!r} is missing")
        return value

    def error(self, key: str) -> ErrorInfo | None:
        raw = self.get(key, dict, None)
        if raw is None:
            return None
        try:
            return ErrorInfo.from_json(raw)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{self.what} field {key!r} is not a recorded error: {exc}") from None
