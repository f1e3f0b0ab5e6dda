"""flux.observe.OpenTelemetry: span trees read back from the SDK's in-memory exporter."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from flux import FluxEngine, RetryPolicy, StepContext, create_workflow
from flux.observe import OpenTelemetry, trace_labels
from flux.observe._otel import run_span_context
from flux.storage import SQLiteStorage
from flux.testing import FakeClock


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    yield exporter
    exporter.clear()


def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    return tracer_provider


def by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, ReadableSpan]:
    return {span.name: span for span in spans}


def parent_id(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


def trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.trace_id)


def flaky() -> Any:
    def handler(ctx: StepContext[Any]) -> str:
        if ctx.attempt < 2:
            raise ConnectionError("refused")
        return "ok"

    return handler


async def test_a_run_is_a_span_with_a_child_span_per_step(exporter: InMemorySpanExporter) -> None:
    flow = (
        create_workflow("order")
        .step("fetch", lambda ctx: 1)
        .step("charge", flaky(), retries=2, retry=RetryPolicy(jitter=0))
    )
    async with FluxEngine(clock=FakeClock()) as engine:
        OpenTelemetry(provider(exporter)).subscribe(engine)
        result = await engine.execute(flow)
    spans = by_name(exporter.get_finished_spans())
    assert set(spans) == {"workflow order", "step fetch", "step charge"}
    run, fetch, charge = spans["workflow order"], spans["step fetch"], spans["step charge"]
    assert parent_id(fetch) == parent_id(charge) == span_id(run)
    assert parent_id(run) == run_span_context(result.id).span_id
    assert {trace_id(s) for s in spans.values()} == {run_span_context(result.id).trace_id}
    assert dict(run.attributes or {}) == {
        "flux.run_id": result.id,
        "flux.workflow": "order",
        "flux.status": "completed",
    }
    assert dict(charge.attributes or {}) == {
        "flux.run_id": result.id,
        "flux.workflow": "order",
        "flux.step": "charge",
        "flux.attempt": 2,
        "flux.status": "completed",
    }
    assert [(e.name, dict(e.attributes or {}).get("flux.attempt")) for e in charge.events] == [
        ("attempt", 1),
        ("retry", 1),
        ("attempt", 2),
    ]
    assert dict(charge.events[1].attributes or {})["exception.type"] == "ConnectionError"
    assert run.status.status_code == StatusCode.OK


async def test_errors_are_recorded_on_the_step_and_the_run(exporter: InMemorySpanExporter) -> None:
    def broken(ctx: StepContext[Any]) -> None:
        raise KeyError("missing")

    def undo(ctx: StepContext[Any]) -> None:
        return None

    flow = (
        create_workflow("broken")
        .step("first", lambda ctx: 1, compensate=undo)
        .step("fail", broken, retries=0)
    )
    async with FluxEngine(clock=FakeClock()) as engine:
        OpenTelemetry(provider(exporter)).subscribe(engine)
        result = await engine.execute(flow)
    assert result.status == "rolled_back"
    spans = by_name(exporter.get_finished_spans())
    fail, run = spans["step fail"], spans["workflow broken"]
    for span in (fail, run):
        assert span.status.status_code == StatusCode.ERROR
        assert span.status.description == "KeyError: 'missing'"
        exception = [e for e in span.events if e.name == "exception"]
        assert [dict(e.attributes or {})["exception.type"] for e in exception] == ["KeyError"]
    assert dict(run.attributes or {})["flux.status"] == "rolled_back"
    compensate = spans["compensate first"]
    assert parent_id(compensate) == span_id(run)
    assert [e.name for e in run.events] == ["rollback start", "rollback complete", "exception"]


async def test_a_resumed_run_continues_its_trace_in_another_process(
    exporter: InMemorySpanExporter, tmp_path: Path
) -> None:
    flow = create_workflow("approval").step("ask", lambda ctx: 1).wait_for_signal("decide", signal="ok")
    flow = flow.step("act", lambda ctx: 2)
    clock = FakeClock()
    async with FluxEngine(SQLiteStorage(tmp_path / "flux.db"), clock=clock) as first:
        OpenTelemetry(provider(exporter)).subscribe(first)
        started = await first.execute(flow)
    assert started.status == "suspended"
    before = exporter.get_finished_spans()
    # Another process: a new engine, a new tracer provider, the same database.
    async with FluxEngine(SQLiteStorage(tmp_path / "flux.db"), clock=clock, workflows=[flow]) as second:
        OpenTelemetry(provider(exporter)).subscribe(second)
        await second.signal(started.id, "ok", {"by": "ada"})
        done = await second.resume(started.id)
    assert done.status == "completed"
    after = exporter.get_finished_spans()[len(before) :]
    runs = [s for s in (*before, *after) if s.name == "workflow approval"]
    assert len(runs) == 2
    assert [dict(s.attributes or {})["flux.status"] for s in runs] == ["suspended", "completed"]
    assert trace_id(runs[0]) == trace_id(runs[1])
    assert parent_id(runs[0]) == parent_id(runs[1]) == run_span_context(started.id).span_id
    resumed = by_name(after)
    assert parent_id(resumed["step act"]) == span_id(runs[1])
    assert trace_id(resumed["step act"]) == trace_id(runs[0])
    assert dict(by_name(before)["step decide"].attributes or {})["flux.status"] == "suspended"


async def test_a_child_run_hangs_under_the_step_that_started_it(exporter: InMemorySpanExporter) -> None:
    child = create_workflow("child").step("work", lambda ctx: "done")
    parent = create_workflow("parent").child("sub", child).step("after", lambda ctx: 1)
    async with FluxEngine(clock=FakeClock()) as engine:
        OpenTelemetry(provider(exporter)).subscribe(engine)
        result = await engine.execute(parent)
    assert result.status == "completed"
    spans = by_name(exporter.get_finished_spans())
    sub, child_run = spans["step sub"], spans["workflow child"]
    assert parent_id(child_run) == span_id(sub)
    assert trace_id(child_run) == trace_id(spans["workflow parent"])
    assert dict(child_run.attributes or {})["flux.parent_run_id"] == result.id
    assert [dict(link.attributes or {})["flux.link"] for link in child_run.links] == ["parent step"]
    assert child_run.links[0].context.span_id == span_id(sub)
    assert parent_id(spans["step work"]) == span_id(child_run)


async def test_unsubscribing_stops_the_spans(exporter: InMemorySpanExporter) -> None:
    async with FluxEngine(clock=FakeClock()) as engine:
        stop = OpenTelemetry(provider(exporter)).subscribe(engine)
        stop()
        await engine.execute(create_workflow("quiet").step("a", lambda ctx: 1))
    assert exporter.get_finished_spans() == ()


async def test_a_run_started_in_a_span_joins_its_trace_through_a_stored_label(
    exporter: InMemorySpanExporter, tmp_path: Path
) -> None:
    flow = create_workflow("request").wait_for_signal("decide", signal="ok").step("act", lambda ctx: 1)
    tracer = provider(exporter).get_tracer("app")
    clock = FakeClock()
    async with FluxEngine(SQLiteStorage(tmp_path / "flux.db"), clock=clock) as first:
        OpenTelemetry(provider(exporter)).subscribe(first)
        with tracer.start_as_current_span("POST /orders") as request:
            labels = trace_labels()
            started = await first.execute(flow, labels=labels)
    context = request.get_span_context()
    assert labels["otel.traceparent"].startswith(f"00-{context.trace_id:032x}-{context.span_id:016x}-")
    async with FluxEngine(SQLiteStorage(tmp_path / "flux.db"), clock=clock, workflows=[flow]) as second:
        OpenTelemetry(provider(exporter)).subscribe(second)  # another process: only the label is shared
        await second.signal(started.id, "ok")
        assert (await second.resume(started.id)).status == "completed"
    spans = exporter.get_finished_spans()
    runs = [s for s in spans if s.name == "workflow request"]
    assert len(runs) == 2
    assert {parent_id(s) for s in runs} == {request.get_span_context().span_id}
    assert {trace_id(s) for s in spans} == {request.get_span_context().trace_id}


def test_no_current_span_means_no_labels() -> None:
    assert trace_labels() == {}
