"""How the ``flux`` command shows runs: tables, a timeline, a live step view, JSON documents."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from flux.engine._keys import WAITING_CHILD
from flux.events import Event, StepComplete, StepFailed, StepRetry, StepSkip, StepStart, StepSuspend
from flux.records import JSON, RunRecord, SignalRecord, StepRecord
from flux.result import RunResult
from flux.status import RunStatus, StepStatus

TRUNCATE = 80
"""Characters of a JSON value ``flux show`` prints without ``--full``."""

STATUS_STYLE = {
    "completed": "green", "failed": "red", "rolled_back": "red", "cancelled": "yellow",
    "suspended": "cyan", "running": "blue", "pending": "dim", "rolling_back": "magenta",
    "skipped": "dim", "compensated": "magenta", "compensating": "magenta",
}  # fmt: skip
_OPEN = (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.SUSPENDED, RunStatus.ROLLING_BACK)


def console(stream: Any = None) -> Console:
    """A console on stdout (or ``stream``); wide when not a terminal, so lines never wrap."""
    stream = stream or sys.stdout
    width = None if stream.isatty() else int(os.environ.get("COLUMNS", "200"))
    return Console(file=stream, width=width, soft_wrap=True, highlight=False)


def emit(out: Console, renderable: RenderableType) -> None:
    """Print ``renderable``; off a terminal, without the blank edges and trailing spaces of tables."""
    if out.is_terminal:
        out.print(renderable)
        return
    with out.capture() as captured:
        out.print(renderable)
    text = "\n".join(line.rstrip() for line in captured.get().splitlines())
    out.file.write(text.strip("\n") + "\n")


def when(value: datetime | None) -> str:
    """A time as ``YYYY-MM-DD HH:MM:SS`` UTC (empty for None)."""
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def seconds(value: float | None) -> str:
    """A duration for people: ``12ms``, ``1.25s``, ``3m07s``, ``2h05m``."""
    if value is None:
        return ""
    if value < 1:
        return f"{value * 1000:.0f}ms"
    if value < 60:
        return f"{value:.2f}s"
    minutes, secs = divmod(int(value), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def compact(value: JSON, full: bool = False) -> str:
    """A JSON value on one line, cut at :data:`TRUNCATE` characters unless ``full``."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    if full or len(text) <= TRUNCATE:
        return text
    return text[: TRUNCATE - 1] + "…"


def styled(status: str) -> Text:
    """A status word in its colour."""
    return Text(status, style=STATUS_STYLE.get(status, ""))


def current_step(run: RunRecord | RunResult) -> str:
    """The step an unfinished run is at (its newest open visit), else empty."""
    steps = run.steps if isinstance(run, RunRecord) else run.history
    if run.status not in _OPEN or not steps:
        return ""
    open_visits = [s for s in steps if s.status in (StepStatus.RUNNING, StepStatus.SUSPENDED)]
    return (open_visits or list(steps))[-1].step


def waits_for(record: StepRecord) -> str:
    """What a visit waits for: a signal, a time, a child run."""
    if record.status != StepStatus.SUSPENDED:
        return ""
    parts = []
    if record.waiting_for:
        parts.append(f"signal {record.waiting_for!r}")
    child = record.actions.get(WAITING_CHILD) if record.actions else None
    if child:
        parts.append(f"child run {child}")
    if record.wake_at is not None:
        parts.append(f"until {when(record.wake_at)} UTC")
    return "waits for " + " ".join(parts) if parts else "suspended"


# --- JSON documents ---------------------------------------------------------------------------


def run_summary(run: RunRecord | RunResult) -> dict[str, JSON]:
    """One line of ``flux list --json``."""
    return {
        "id": run.id,
        "workflow": run.workflow,
        "status": run.status.value,
        "created_at": None if run.created_at is None else run.created_at.isoformat(),
        "finished_at": None if run.finished_at is None else run.finished_at.isoformat(),
        "duration": run.duration,
        "current_step": current_step(run) or None,
        "labels": dict(run.labels),
    }


def run_document(run: RunRecord, signals: Sequence[SignalRecord] = ()) -> dict[str, JSON]:
    """``flux show --json``: every stored field, the step records, data, outputs and signals."""
    document = run.to_json()
    document.update(duration=run.duration, data=run.data, outputs=run.outputs)
    document["signals"] = [signal.to_json() for signal in signals]
    return document


def result_document(result: RunResult) -> dict[str, JSON]:
    """What ``flux run --json`` (and resume, retry, replay, cancel) print."""
    return {
        **run_summary(result),
        "input": result.input,
        "data": result.data,
        "outputs": result.outputs,
        "error": None if result.error is None else result.error.to_json(),
        "history": [record.to_json() for record in result.history],
    }


def dump(value: JSON) -> str:
    """A JSON document as text (UTF-8, two-space indents)."""
    return json.dumps(value, ensure_ascii=False, indent=2, default=str)


# --- tables -----------------------------------------------------------------------------------


def runs_table(runs: Sequence[RunRecord]) -> Table:
    """``flux list``: one row per run (a labels column when some run has labels)."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    columns = ["id", "workflow", "status", "created (UTC)", "duration", "step"]
    labelled = any(run.labels for run in runs)
    for name in [*columns, "labels"] if labelled else columns:
        table.add_column(name, no_wrap=True)
    for run in runs:
        row: list[RenderableType] = [
            run.id, run.workflow, styled(run.status.value), when(run.created_at), seconds(run.duration),
            current_step(run),
        ]  # fmt: skip
        if labelled:
            row.append(" ".join(f"{k}={v}" for k, v in sorted(run.labels.items())))
        table.add_row(*row)
    return table


def run_view(run: RunRecord, signals: Sequence[SignalRecord], full: bool) -> RenderableType:
    """``flux show``: the header, the timeline of step visits, then data, outputs and signals."""
    header = Table.grid(padding=(0, 2))
    header.add_column(style="bold")
    header.add_column()
    header.add_row("run", run.id)
    header.add_row("workflow", f"{run.workflow} (fingerprint {run.fingerprint})")
    header.add_row("status", styled(run.status.value))
    if run.labels:
        header.add_row("labels", " ".join(f"{k}={v}" for k, v in sorted(run.labels.items())))
    header.add_row("created", when(run.created_at) + " UTC")
    if run.finished_at is not None:
        header.add_row("finished", f"{when(run.finished_at)} UTC ({seconds(run.duration)})")
    header.add_row("input", compact(run.input, full))
    if run.error is not None:
        where = f" in step {run.error.step}" if run.error.step else ""
        header.add_row("error", Text(f"{run.error.type}: {run.error.message}{where}", style="red"))
    if run.owner and run.lease_expires_at is not None:
        header.add_row("owner", f"{run.owner} (lease until {when(run.lease_expires_at)} UTC)")

    timeline = Table(box=box.SIMPLE_HEAD, pad_edge=False, title="steps", title_justify="left")
    for name in ("#", "step", "status", "attempts", "started (UTC)", "duration", "detail"):
        timeline.add_column(name, no_wrap=name != "detail")
    for record in run.steps:
        detail = waits_for(record)
        if record.error is not None:
            detail = f"{record.error.type}: {record.error.message}"
            if not full and len(detail) > TRUNCATE:
                detail = detail[: TRUNCATE - 1] + "…"
        timeline.add_row(
            str(record.seq), record.step, styled(record.status.value), str(record.attempts),
            when(record.started_at), seconds(record.duration), detail,
        )  # fmt: skip

    parts: list[RenderableType] = [header, timeline]
    if any(record.logs for record in run.steps):
        parts.append(_logs(run.steps, full))
    parts.append(_values("data", run.data, full))
    parts.append(_values("outputs", run.outputs, full))
    if signals:
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, title="signals", title_justify="left")
        for name in ("name", "received (UTC)", "taken by", "payload"):
            table.add_column(name, no_wrap=True)
        for signal in signals:
            taken = "waiting" if signal.consumed_by is None else f"visit {signal.consumed_by}"
            table.add_row(signal.name, when(signal.created_at), taken, compact(signal.payload, full))
        parts.append(table)
    if not full:
        parts.append(Text("(values cut at 80 characters; --full shows everything)", style="dim"))
    return Group(*parts)


_LEVEL_STYLE = {"warning": "yellow", "error": "red", "critical": "red"}


def _logs(records: Sequence[StepRecord], full: bool) -> Table:
    """The ``ctx.log`` lines kept with each visit, in visit order."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, title="logs", title_justify="left")
    for name in ("step", "time (UTC)", "level", "message"):
        table.add_column(name, no_wrap=name != "message")
    for record in records:
        for line in record.logs:
            message = line.message
            if not full and len(message) > TRUNCATE:
                message = message[: TRUNCATE - 1] + "…"
            level = Text(line.level, style=_LEVEL_STYLE.get(line.level, ""))
            table.add_row(f"{record.step} #{record.seq}", when(line.time), level, message)
    return table


def _values(title: str, values: dict[str, JSON], full: bool) -> RenderableType:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, title=title, title_justify="left")
    table.add_column("key", no_wrap=True)
    table.add_column("value", no_wrap=not full, overflow="fold")
    for key, value in values.items():
        table.add_row(key, compact(value, full))
    if not values:
        table.add_row(Text("(none)", style="dim"), "")
    return table


def result_line(result: RunResult) -> Text:
    """The last line of ``flux run``: the run id, its status and how long it took."""
    text = Text.assemble("run ", result.id, " ", styled(result.status.value))
    if result.duration is not None:
        text.append(f" in {seconds(result.duration)}")
    if result.error is not None:
        text.append(f": {result.error.type}: {result.error.message}", style="red")
    return text


# --- the live step view of `flux run` ---------------------------------------------------------


class StepView:
    """Rows of step visits fed by engine events: a spinner while a step runs, then ✓ or ✗.

    On a terminal it renders live (``rich.live.Live``); otherwise each finished step is printed
    as one line as it ends.
    """

    def __init__(self, out: Console) -> None:
        self.out = out
        self.live = out.is_terminal
        self.rows: dict[str, RenderableType] = {}

    def __rich__(self) -> RenderableType:
        return Group(*self.rows.values())

    def _set(self, step: str, row: RenderableType, done: bool) -> None:
        if self.live:
            self.rows[step] = row
        elif done:
            self.out.print(row)

    def on_event(self, ev: Event) -> None:
        """Update the step's row from one event."""
        if isinstance(ev, StepStart):
            self._set(ev.step, Spinner("dots", text=Text(f"{ev.step} (attempt {ev.attempt})")), False)
        elif isinstance(ev, StepComplete):
            line = Text.assemble(("✓ ", "green"), ev.step, (f" {seconds(ev.duration)}", "dim"))
            self._set(ev.step, line, True)
        elif isinstance(ev, StepRetry):
            line = Text.assemble(
                ("↻ ", "yellow"), ev.step,
                f" attempt {ev.attempt} failed: {ev.error.type}: {ev.error.message}",
                (f"; retrying in {seconds(ev.delay)}", "dim"),
            )  # fmt: skip
            self._set(f"{ev.step}#{ev.attempt}", line, True)
        elif isinstance(ev, StepFailed):
            line = Text.assemble(("✗ ", "red"), ev.step, f" {ev.error.type}: {ev.error.message}",
                                 (f" {seconds(ev.duration)}", "dim"))  # fmt: skip
            self._set(ev.step, line, True)
        elif isinstance(ev, StepSkip):
            self._set(ev.step, Text.assemble(("- ", "dim"), ev.step, (" skipped", "dim")), True)
        elif isinstance(ev, StepSuspend):
            self._set(ev.step, Text.assemble(("⏸ ", "cyan"), ev.step, f" {ev.reason}"), True)
