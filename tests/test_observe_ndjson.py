"""flux.observe.NDJSONSink and read_trace: one JSON line per event, read back as events."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from flux import FluxEngine, StepContext, create_workflow
from flux.observe import NDJSONSink, read_trace
from flux.testing import EventRecorder, FakeClock


def boom(ctx: StepContext[Any]) -> None:
    raise ConnectionError("naïve ✓")


async def test_every_event_is_a_line_that_reads_back_equal(tmp_path: Path) -> None:
    path = tmp_path / "trace.ndjson"
    recorder, sink = EventRecorder(), NDJSONSink(path)
    flow = (
        create_workflow("traced")
        .step("a", lambda ctx: {"out": [1, 2]}, compensate=lambda ctx: None)
        .step("b", boom, retries=1)
    )
    async with FluxEngine(clock=FakeClock(), on={"*": recorder}) as engine:
        engine.on("*", sink)
        await engine.execute(flow)
        lines = path.read_text(encoding="utf-8").splitlines()  # flushed: readable while open
    sink.close()
    assert len(lines) == len(recorder.events) > 8
    assert [json.loads(line)["event"] for line in lines] == recorder.names
    assert read_trace(path) == recorder.events
    retry = json.loads(lines[recorder.names.index("step_retry")])
    assert retry["error"]["message"] == "naïve ✓" and retry["step"] == "b"
    assert retry["timestamp"] == "2030-01-01T00:00:00+00:00"


async def test_a_sink_appends_and_reopens_after_close(tmp_path: Path) -> None:
    path = tmp_path / "trace.ndjson"
    with NDJSONSink(path) as sink:
        async with FluxEngine(clock=FakeClock(), on={"*": sink}) as engine:
            await engine.execute(create_workflow("one").step("a", lambda ctx: 1))
    async with FluxEngine(clock=FakeClock(), on={"*": sink}) as engine:
        await engine.execute(create_workflow("two").step("a", lambda ctx: 1))
    sink.close()
    assert [e.workflow for e in read_trace(path) if e.name == "workflow_start"] == ["one", "two"]


def test_a_line_cut_by_a_crash_is_left_out(tmp_path: Path) -> None:
    path = tmp_path / "trace.ndjson"
    start = '{"event":"workflow_start","run_id":"r","workflow":"w","timestamp":"2030-01-01T00:00:00+00:00"}'
    path.write_text(start + "\n" + start[:30], encoding="utf-8")
    (event,) = read_trace(path)
    assert (event.name, event.run_id) == ("workflow_start", "r")


@pytest.mark.parametrize(
    ("line", "why"),
    [('{"event": "nope"}', "not a flux event line"), ("[1, 2]", "line 1 is not a flux event")],
    ids=["unknown-event", "not-an-object"],
)
def test_bad_lines_are_refused_with_their_number(tmp_path: Path, line: str, why: str) -> None:
    path = tmp_path / "trace.ndjson"
    path.write_text(line + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=why):
        read_trace(path)
