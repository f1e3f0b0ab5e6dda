"""Commands that read or move stored runs: list, show, graph, export, import, prune."""

from __future__ import annotations

import json
import re
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from flux.cli._base import Options, command, find_run, parse_labels, with_engine
from flux.cli._load import CliError, load_workflow
from flux.cli._render import console, dump, emit, run_document, run_summary, run_view, runs_table
from flux.engine import FluxEngine
from flux.records import RunFilter
from flux.status import RunStatus
from flux.storage import export_run, import_run

_STATUSES = [s.value for s in RunStatus]
_FINISHED = [s.value for s in RunStatus if s.finished]
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_age(text: str) -> timedelta:
    """``7d``, ``12h``, ``1h30m``, ``90s`` as a timedelta."""
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise CliError(f"--older-than {text!r} is not a duration; write for example 7d, 12h, 1h30m or 90s")
    return timedelta(seconds=sum(float(n) * _UNITS[u] for n, u in parts))


@command(
    short_help="List runs, newest first.",
    name="list",
    epilog="Example: flux list --status failed --label tenant=acme --limit 5",
)
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(_STATUSES),
    help="Only runs in this status (repeatable).",
)
@click.option("--workflow", metavar="NAME", help="Only runs of this workflow.")
@click.option(
    "--label", "labels", multiple=True, metavar="KEY=VALUE", help="Only runs with this label (repeatable)."
)
@click.option(
    "--limit", default=20, show_default=True, type=click.IntRange(min=0), help="At most this many runs."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per run (NDJSON).")
def list_runs(
    opts: Options, statuses: tuple[str, ...], workflow: str | None, labels: tuple[str, ...], limit: int,
    as_json: bool,
) -> None:  # fmt: skip
    """List runs, newest first: id, workflow, status, created, duration, current step."""
    wanted = RunFilter(
        workflow=workflow, status=statuses or None, labels=parse_labels(labels) or None, limit=limit
    )

    async def body(engine: FluxEngine) -> None:
        runs = await engine.storage.list(wanted)
        if as_json:
            for run in runs:
                click.echo(json.dumps(run_summary(run), ensure_ascii=False))
        elif runs:
            emit(console(), runs_table(runs))
        else:
            click.echo("no runs match", err=True)

    with_engine(opts, body)


@command(
    short_help="Show one run: header, step timeline, data, outputs.",
    epilog="Example: flux show 3f2a9c0d... --full",
)
@click.argument("run_id", metavar="RUN")
@click.option("--full", is_flag=True, help="Print data, outputs and errors whole (not cut at 80 characters).")
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON document: every field, steps, data, outputs, signals."
)
def show(opts: Options, run_id: str, full: bool, as_json: bool) -> None:
    """Show a run: its header, a timeline of every step visit, then its data and outputs."""

    async def body(engine: FluxEngine) -> None:
        run = await find_run(engine, run_id)
        signals = await engine.storage.list_signals(run.id)
        if as_json:
            click.echo(dump(run_document(run, signals)))
        else:
            emit(console(), run_view(run, signals, full))

    with_engine(opts, body)


@command(
    short_help="Print a workflow's plan (Mermaid or JSON).",
    epilog="Example: flux graph examples.order_fulfillment:order_flow --format json",
)
@click.argument("workflow", metavar="MODULE:WF")
@click.option("--format", "fmt", type=click.Choice(["mermaid", "json"]), default="mermaid", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="The same as --format json.")
def graph(opts: Options, workflow: str, fmt: str, as_json: bool) -> None:
    """Print a workflow's plan as a Mermaid flowchart or as JSON (no database needed)."""
    plan = load_workflow(workflow, opts.app)
    click.echo(dump(plan.describe()) if as_json or fmt == "json" else plan.to_mermaid())


@command(
    short_help="Delete old finished runs.",
    epilog="Example: flux prune --older-than 7d --status completed --status cancelled",
)
@click.option("--older-than", "age", required=True, metavar="DURATION", help="e.g. 7d, 12h, 1h30m, 90s.")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(_FINISHED),
    help="Only this finished status (repeatable; default all finished).",
)
@click.option("--json", "as_json", is_flag=True, help='Print {"deleted": N}.')
def prune(opts: Options, age: str, statuses: tuple[str, ...], as_json: bool) -> None:
    """Delete finished runs that finished longer ago than --older-than (in-flight runs never)."""
    older = parse_age(age)

    async def body(engine: FluxEngine) -> int:
        cutoff = engine.clock.now() - older
        return await engine.storage.prune(older_than=cutoff, status=list(statuses) or None)

    deleted = with_engine(opts, body)
    click.echo(
        json.dumps({"deleted": deleted}) if as_json else f"deleted {deleted} run(s) finished {age}+ ago"
    )


@command(
    short_help="Print a run as one JSON document.",
    name="export",
    epilog="Example: flux export 3f2a9c0d... > run.json",
)
@click.argument("run_id", metavar="RUN")
def export(opts: Options, run_id: str) -> None:
    """Print a run as one JSON document (header, every step record, signals) for flux import."""

    async def body(engine: FluxEngine) -> dict[str, Any]:
        run = await find_run(engine, run_id)
        return await export_run(engine.storage, run.id)

    click.echo(dump(with_engine(opts, body)))


@command(
    short_help="Store a run written by flux export.",
    name="import",
    epilog="Example: flux --db sqlite:///other.db import run.json",
)
@click.argument("path", metavar="FILE")
@click.option("--json", "as_json", is_flag=True, help="Print the imported run's summary as JSON.")
def import_(opts: Options, path: str, as_json: bool) -> None:
    """Store a run exported by flux export under its own id (refused if the id exists). FILE may be -."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"{exc.msg} at line {exc.lineno}"
        raise CliError(f"{path} is not JSON ({where}); give a file written by flux export") from exc

    async def body(engine: FluxEngine) -> dict[str, Any]:
        try:
            run = await import_run(engine.storage, document)
        except ValueError as exc:
            raise CliError(f"{path}: {exc}") from exc
        return run_summary(run)

    summary = with_engine(opts, body, create=True)
    if as_json:
        click.echo(json.dumps(summary, ensure_ascii=False))
    else:
        click.echo(f"imported run {summary['id']} ({summary['workflow']}, {summary['status']})")
