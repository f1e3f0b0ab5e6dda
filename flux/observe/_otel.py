"""OpenTelemetry: a span per run, a child span per step visit, from the engine's events.

Each stretch of a run that one process drives (from start or resume to its end or a
suspension) is one run span. Every run span of a run hangs under the same parent, found from
what is stored with the run, so a run resumed later, in any process, continues its trace:

- the ``otel.traceparent`` label (``labels=trace_labels()`` when the run starts): the span
  that started the run;
- otherwise a remote span context derived from the run's root run id (a child run's parent,
  its parent...), hashed into a trace id and a span id.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

try:
    from opentelemetry import trace
    from opentelemetry.trace import Link, Span, SpanContext, Status, StatusCode, TraceFlags
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "flux.observe.OpenTelemetry needs the OpenTelemetry API: pip install 'flux-workflow[otel]'"
    ) from exc

from flux.engine import FluxEngine
from flux.engine._children import parent_of
from flux.events import Event, StepEvent
from flux.records import ErrorInfo
from flux.storage.protocol import Storage

_TRACER = "flux"
TRACE_LABEL = "otel.traceparent"
"""The run label holding the W3C ``traceparent`` of the span that started the run."""
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def trace_labels() -> dict[str, str]:
    """Labels that put a run in the current span's trace: ``engine.execute(..., labels=trace_labels())``.

    Empty when no span is current. Child runs inherit labels, so they join the trace too.
    """
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {TRACE_LABEL: f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"}


def _from_traceparent(value: str) -> SpanContext | None:
    found = _TRACEPARENT.match(value)
    if found is None:
        return None
    context = SpanContext(
        trace_id=int(found[1], 16),
        span_id=int(found[2], 16),
        is_remote=True,
        trace_flags=TraceFlags(int(found[3], 16)),
    )
    return context if context.is_valid else None


def _ns(when: datetime) -> int:
    return int(when.timestamp() * 1_000_000) * 1000


def _root(run_id: str) -> str:
    parent = parent_of(run_id)
    while parent is not None:
        run_id, parent = parent, parent_of(parent)
    return run_id


def run_span_context(run_id: str) -> SpanContext:
    """The remote span context every run span of ``run_id`` (and its children) descends from."""
    digest = hashlib.sha256(_root(run_id).encode()).digest()
    return SpanContext(
        trace_id=int.from_bytes(digest[:16], "big") or 1,
        span_id=int.from_bytes(digest[16:24], "big") or 1,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )


def _error_attributes(error: ErrorInfo | None) -> dict[str, Any]:
    if error is None:
        return {}
    return {"exception.type": error.type, "exception.message": error.message}


class OpenTelemetry:
    """Turns an engine's events into OpenTelemetry spans.

    ``OpenTelemetry(tracer_provider).subscribe(engine)``: one span per run (``workflow
    <name>``), a child span per step visit (``step <name>``) whose attempts, retries and
    waits are span events, errors recorded on the spans that failed, compensations as
    spans of their own, child runs under (and linked to) the step that started them. Spans
    carry ``flux.run_id``, ``flux.workflow``, ``flux.step`` and ``flux.attempt``. Span times
    come from the events, that is from the engine's clock.

    Args:
        tracer_provider: where spans go; None means the global provider
            (``opentelemetry.trace.set_tracer_provider``).
    """

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        self._tracer = trace.get_tracer(_TRACER, tracer_provider=tracer_provider)
        self._runs: dict[str, Span] = {}
        self._steps: dict[tuple[str, str], Span] = {}
        self._parents: dict[str, SpanContext] = {}
        self._storage: Storage | None = None

    def subscribe(self, engine: FluxEngine) -> Callable[[], None]:
        """Receive every event of ``engine``; returns the function that unsubscribes.

        The engine's storage is read once per run span, for the run's ``otel.traceparent``.
        """
        self._storage = engine.storage
        return engine.on("*", self)

    async def __call__(self, event: Event) -> None:
        opens_span = event.name != "signal_received"  # the only event that never opens a span
        if opens_span and event.run_id not in self._runs and event.run_id not in self._parents:
            self._parents[event.run_id] = await self._stored_parent(event.run_id)
        self._handle(event)

    async def _stored_parent(self, run_id: str) -> SpanContext:
        run = None if self._storage is None else await self._storage.load(run_id)
        stored = None if run is None else run.labels.get(TRACE_LABEL)
        parent = None if stored is None else _from_traceparent(stored)
        return parent or run_span_context(run_id)

    def _handle(self, event: Event) -> None:
        at = _ns(event.timestamp)
        error: ErrorInfo | None = getattr(event, "error", None)
        name = event.name
        if isinstance(event, StepEvent):
            self._on_step(event, name, at, error)
        elif name in ("workflow_start", "workflow_resume"):
            span = self._run(event)
            if name == "workflow_resume":
                span.add_event("resumed", {"flux.step": getattr(event, "from_step", None) or ""}, at)
        elif name == "workflow_complete":
            self._end_run(event, "completed", None)
        elif name == "workflow_error":
            self._end_run(event, str(getattr(event, "status", "failed")), error)
        elif name == "workflow_cancel":
            reason = getattr(event, "reason", None) or "cancelled"
            self._end_run(event, "cancelled", ErrorInfo(type="Cancelled", message=reason))
        elif name == "workflow_suspend":
            reason = {"flux.step": getattr(event, "step", ""), "flux.reason": getattr(event, "reason", "")}
            self._run(event).add_event("suspended", reason, at)
            self._end_run(event, "suspended", None)
        elif name == "rollback_start":
            self._run(event).add_event(
                "rollback start", {"flux.steps": list(getattr(event, "steps", ()))}, at
            )
        elif name == "rollback_complete":
            ok = bool(getattr(event, "succeeded", False))
            self._run(event).add_event("rollback complete", {"flux.succeeded": ok}, at)
        elif name == "signal_received" and event.run_id in self._runs:
            self._runs[event.run_id].add_event("signal", {"flux.signal": getattr(event, "signal", "")}, at)

    # --- runs -----------------------------------------------------------------------------

    def _run(self, event: Event) -> Span:
        span = self._runs.get(event.run_id)
        if span is None:
            span = self._runs[event.run_id] = self._start_run(event)
        return span

    def _start_run(self, event: Event) -> Span:
        attributes = {"flux.run_id": event.run_id, "flux.workflow": event.workflow}
        parent = self._parents.pop(event.run_id, None) or run_span_context(event.run_id)
        links = []
        caller = trace.get_current_span().get_span_context()
        if caller.is_valid and caller.trace_id != parent.trace_id:
            links.append(Link(caller, {"flux.link": "caller"}))
        parent_run = parent_of(event.run_id)
        if parent_run is not None:
            attributes["flux.parent_run_id"] = parent_run
            step = event.run_id[len(parent_run) + 1 :].split("#", 1)[0]
            opener = self._steps.get((parent_run, step))
            if opener is not None:
                parent = opener.get_span_context()
                links.append(Link(parent, {"flux.link": "parent step", "flux.step": step}))
        return self._tracer.start_span(
            f"workflow {event.workflow}",
            context=trace.set_span_in_context(trace.NonRecordingSpan(parent)),
            attributes=attributes,
            links=links,
            start_time=_ns(event.timestamp),
        )

    def _end_run(self, event: Event, status: str, error: ErrorInfo | None) -> None:
        span = self._run(event)
        del self._runs[event.run_id]
        for key in [key for key in self._steps if key[0] == event.run_id]:
            self._steps.pop(key).end(end_time=_ns(event.timestamp))
        _finish(span, event, status, error)

    # --- steps ----------------------------------------------------------------------------

    def _on_step(self, event: StepEvent, name: str, at: int, error: ErrorInfo | None) -> None:
        if name == "step_compensate":
            _finish(self._start_step(event, f"compensate {event.step}"), event, "compensated", error)
            return
        key = (event.run_id, event.step)
        span = self._steps.get(key)
        if span is None:
            span = self._steps[key] = self._start_step(event, f"step {event.step}")
        span.set_attribute("flux.attempt", event.attempt)
        if name == "step_start":
            span.add_event("attempt", {"flux.attempt": event.attempt}, at)
        elif name == "step_retry":
            retry = {"flux.attempt": event.attempt, "flux.delay": getattr(event, "delay", 0.0)}
            span.add_event("retry", {**retry, **_error_attributes(error)}, at)
        elif name in _STEP_ENDS:
            if name == "step_suspend":
                span.add_event("suspended", {"flux.reason": getattr(event, "reason", "")}, at)
            del self._steps[key]
            _finish(span, event, _STEP_ENDS[name], error)

    def _start_step(self, event: StepEvent, name: str) -> Span:
        return self._tracer.start_span(
            name,
            context=trace.set_span_in_context(self._run(event)),
            attributes={
                "flux.run_id": event.run_id,
                "flux.workflow": event.workflow,
                "flux.step": event.step,
                "flux.attempt": event.attempt,
            },
            start_time=_ns(event.timestamp),
        )


_STEP_ENDS = {
    "step_complete": "completed",
    "step_error": "failed",
    "step_skip": "skipped",
    "step_suspend": "suspended",
}


def _finish(span: Span, event: Event, status: str, error: ErrorInfo | None) -> None:
    at = _ns(event.timestamp)
    span.set_attribute("flux.status", status)
    if error is not None:
        span.add_event("exception", _error_attributes(error), at)
        span.set_status(Status(StatusCode.ERROR, f"{error.type}: {error.message}"))
    elif status == "completed":
        span.set_status(Status(StatusCode.OK))
    span.end(end_time=at)
