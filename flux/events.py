"""Typed lifecycle events and the bus that delivers them to subscribers.

Every event is a frozen object with the run id, the workflow name and a timestamp; step events
add the step and the attempt. Subscribers may be sync or async; they are awaited one after the
other, in subscription order. A subscriber that raises is logged and ignored: it never changes
the outcome of a run.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, ClassVar, Literal, overload

import attrs

from flux.records import JSON, ErrorInfo

__all__ = [
    "EVENT_TYPES",
    "Event",
    "EventBus",
    "EventName",
    "EventSource",
    "RollbackComplete",
    "RollbackStart",
    "SignalReceived",
    "StepCompensate",
    "StepComplete",
    "StepEvent",
    "StepFailed",
    "StepRetry",
    "StepSkip",
    "StepStart",
    "StepSuspend",
    "Subscriber",
    "Unsubscribe",
    "WorkflowCancel",
    "WorkflowComplete",
    "WorkflowFailed",
    "WorkflowResume",
    "WorkflowStart",
    "WorkflowSuspend",
]

logger = logging.getLogger("flux.events")


@attrs.frozen(kw_only=True)
class Event:
    """Fields every event has."""

    name: ClassVar[str] = "*"
    run_id: str
    workflow: str
    timestamp: datetime


@attrs.frozen(kw_only=True)
class WorkflowStart(Event):
    """A run started (or restarted from the beginning)."""

    name: ClassVar[str] = "workflow_start"


@attrs.frozen(kw_only=True)
class WorkflowComplete(Event):
    """A run completed; ``duration`` in seconds."""

    name: ClassVar[str] = "workflow_complete"
    duration: float
    outputs: dict[str, JSON] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class WorkflowFailed(Event):
    """A run ended ``failed`` (or ``rolled_back``: check ``status``)."""

    name: ClassVar[str] = "workflow_error"
    status: str
    error: ErrorInfo | None
    duration: float


@attrs.frozen(kw_only=True)
class WorkflowSuspend(Event):
    """A run suspended to wait for a signal or a timer."""

    name: ClassVar[str] = "workflow_suspend"
    step: str
    reason: str = ""


@attrs.frozen(kw_only=True)
class WorkflowResume(Event):
    """A stopped run continues (after a crash, a suspension, a failure or on request)."""

    name: ClassVar[str] = "workflow_resume"
    from_step: str | None = None


@attrs.frozen(kw_only=True)
class WorkflowCancel(Event):
    """A run was cancelled."""

    name: ClassVar[str] = "workflow_cancel"
    reason: str | None = None


@attrs.frozen(kw_only=True)
class RollbackStart(Event):
    """Compensation of completed steps begins; ``steps`` lists them newest first."""

    name: ClassVar[str] = "rollback_start"
    steps: tuple[str, ...]
    error: ErrorInfo | None = None


@attrs.frozen(kw_only=True)
class RollbackComplete(Event):
    """Compensation finished; ``succeeded`` is False when a compensation failed for good."""

    name: ClassVar[str] = "rollback_complete"
    succeeded: bool


@attrs.frozen(kw_only=True)
class StepEvent(Event):
    """Fields every step event has."""

    step: str
    attempt: int = 1


@attrs.frozen(kw_only=True)
class StepStart(StepEvent):
    """An attempt of a step starts."""

    name: ClassVar[str] = "step_start"


@attrs.frozen(kw_only=True)
class StepComplete(StepEvent):
    """A step completed; ``duration`` covers all its attempts, in seconds."""

    name: ClassVar[str] = "step_complete"
    duration: float
    output: JSON = None


@attrs.frozen(kw_only=True)
class StepFailed(StepEvent):
    """A step failed for good (no retry left)."""

    name: ClassVar[str] = "step_error"
    error: ErrorInfo
    duration: float


@attrs.frozen(kw_only=True)
class StepRetry(StepEvent):
    """Attempt ``attempt`` failed and will be retried after ``delay`` seconds."""

    name: ClassVar[str] = "step_retry"
    error: ErrorInfo
    delay: float


@attrs.frozen(kw_only=True)
class StepSkip(StepEvent):
    """A step's ``when`` predicate was false."""

    name: ClassVar[str] = "step_skip"


@attrs.frozen(kw_only=True)
class StepSuspend(StepEvent):
    """A step is waiting (signal or timer)."""

    name: ClassVar[str] = "step_suspend"
    reason: str = ""


@attrs.frozen(kw_only=True)
class StepCompensate(StepEvent):
    """A completed step's compensation ran; ``error`` is set when it failed for good."""

    name: ClassVar[str] = "step_compensate"
    error: ErrorInfo | None = None


@attrs.frozen(kw_only=True)
class SignalReceived(Event):
    """A signal was stored for a run."""

    name: ClassVar[str] = "signal_received"
    signal: str
    payload: JSON = None


EVENT_TYPES: dict[str, type[Event]] = {
    cls.name: cls
    for cls in (
        WorkflowStart,
        WorkflowComplete,
        WorkflowFailed,
        WorkflowSuspend,
        WorkflowResume,
        WorkflowCancel,
        RollbackStart,
        RollbackComplete,
        StepStart,
        StepComplete,
        StepFailed,
        StepRetry,
        StepSkip,
        StepSuspend,
        StepCompensate,
        SignalReceived,
    )
}
"""Every event name, mapped to its class."""

EventName = Literal[
    "workflow_start",
    "workflow_complete",
    "workflow_error",
    "workflow_suspend",
    "workflow_resume",
    "workflow_cancel",
    "rollback_start",
    "rollback_complete",
    "step_start",
    "step_complete",
    "step_error",
    "step_retry",
    "step_skip",
    "step_suspend",
    "step_compensate",
    "signal_received",
    "*",
]

Subscriber = Callable[[Any], Any]
Unsubscribe = Callable[[], None]


class EventBus:
    """Subscribers by event name; ``"*"`` receives every event."""

    def __init__(self) -> None:
        self._subscribers: dict[str, list[Subscriber]] = {}
        self._wanted: frozenset[str] | None = frozenset()  # None: "*" has subscribers
        self._logged: dict[str, Subscriber] = {}
        self._logging: Callable[[], bool] = bool

    def log_with(self, logged: Mapping[str, Subscriber], enabled: Callable[[], bool]) -> None:
        """Deliver events named in ``logged`` to their function first, but only while
        ``enabled()`` is true: with logging off, nobody else listening, the events are not
        even built (``wants`` is false)."""
        self._logged = dict(logged)
        self._logging = enabled

    def on(self, name: str, fn: Subscriber) -> Unsubscribe:
        """Subscribe ``fn`` to ``name``; returns a function that unsubscribes it.

        Raises:
            ValueError: ``name`` is not an event name (the message lists them).
            TypeError: ``fn`` is not callable.
        """
        if name != "*" and name not in EVENT_TYPES:
            known = ", ".join(sorted(EVENT_TYPES))
            raise ValueError(f"unknown event {name!r}; subscribe to one of: {known}, or '*'")
        if not callable(fn):
            raise TypeError(f"event subscriber must be callable, got {fn!r}")
        self._subscribers.setdefault(name, []).append(fn)
        self._refresh()

        def unsubscribe() -> None:
            subscribers = self._subscribers.get(name, [])
            if fn in subscribers:
                subscribers.remove(fn)
                self._refresh()

        return unsubscribe

    def wants(self, name: str) -> bool:
        """True when someone listens to ``name`` (lets the engine skip building events)."""
        wanted = self._wanted
        return wanted is None or name in wanted or (name in self._logged and self._logging())

    def _refresh(self) -> None:
        subs = self._subscribers
        self._wanted = None if subs.get("*") else frozenset(name for name, fns in subs.items() if fns)

    async def emit(self, event: Event) -> None:
        """Deliver ``event`` to its subscribers, then to the ``"*"`` ones, in order."""
        logged = self._logged.get(event.name)
        if logged is not None and self._logging():
            logged(event)
        for fn in (*self._subscribers.get(event.name, ()), *self._subscribers.get("*", ())):
            try:
                result = fn(event)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("event subscriber %r failed on %s; ignored", fn, event.name)


class EventSource:
    """Something whose lifecycle events can be subscribed to: the engine.

    ``on`` is typed per event name, so ``engine.on("step_complete", lambda ev: ev.duration)``
    type-checks ``ev`` as a :class:`StepComplete`.
    """

    _bus: EventBus

    @overload
    def on(self, event: Literal["workflow_start"], fn: Callable[[WorkflowStart], Any]) -> Unsubscribe: ...
    @overload
    def on(
        self, event: Literal["workflow_complete"], fn: Callable[[WorkflowComplete], Any]
    ) -> Unsubscribe: ...
    @overload
    def on(self, event: Literal["workflow_error"], fn: Callable[[WorkflowFailed], Any]) -> Unsubscribe: ...
    @overload
    def on(self, event: Literal["workflow_suspend"], fn: Callable[[WorkflowSuspend], Any]) -> Unsubscribe: ...
    @overload
    def on(self, event: Literal["workflow_resume"], fn: Callable[[WorkflowResume], Any]) -> Unsubscribe: ...
    @overload
    def on(self, event: Literal["workflow_cancel"], fn: Callable[[WorkflowCancel], Any]) -> Unsubscribe: ...
    @overload
    def on(self, event: Literal["rollback_start"], fn: Callable[[RollbackStart], Any]) -> Unsubscribe: ...
    @overload
    def on(
        self, event: Literal["rollback_complete"], fn: Callable[[RollbackComplete], Any]
    ) -> Unsubscribe: ...
    @overload
    def on(self, event: Literal["step_start"], fn: Callable[[StepStart], Any]) -> Unsubscribe: ...
    @overload
    def on(self, event: Literal["step_complete"], fn: Callable[[StepComplete], Any]) -> Unsubscribe: ...
    @overload
    def on(self, event: Literal["step_error"], fn: Callable[[StepFailed], Any]) -> Unsubscribe: ...
    @overload
    def on(self, event: Literal["step_retry"], fn: Callable[[StepRetry], Any]) -> Unsubscribe: ...
    @overload
    def on(self, event: Literal["step_skip"], fn: Callable[[StepSkip], Any]) -> Unsubscribe: ...
    @overload
    def on(self, event: Literal["step_suspend"], fn: Callable[[StepSuspend], Any]) -> Unsubscribe: ...
    @overload
    def on(self, event: Literal["step_compensate"], fn: Callable[[StepCompensate], Any]) -> Unsubscribe: ...
    @overload
    def on(self, event: Literal["signal_received"], fn: Callable[[SignalReceived], Any]) -> Unsubscribe: ...
    @overload
    def on(self, event: str, fn: Callable[[Event], Any]) -> Unsubscribe: ...
    def on(self, event: str, fn: Callable[[Any], Any]) -> Unsubscribe:
        """Subscribe ``fn`` (sync or async) to an event name, or ``"*"`` for all.

        Returns a function that unsubscribes. Raises ``ValueError`` for an unknown name.
        """
        return self._bus.on(event, fn)
