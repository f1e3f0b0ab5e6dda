"""Commands that drive runs: run, resume, retry, replay, signal, cancel, worker."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import click
from rich.live import Live

from flux.cli._base import (
    Options,
    command,
    exit_code,
    find_run,
    need_plan,
    parse_labels,
    setup_logging,
    with_engine,
)
from flux.cli._load import CliError, close, import_module, load_workflow, parse_json
from flux.cli._render import StepView, console, dump, result_document, result_line
from flux.engine import FluxEngine
from flux.events import StepComplete, StepFailed, StepRetry, StepSkip, StepStart, StepSuspend
from flux.records import RunRecord
from flux.result import RunResult

logger = logging.getLogger("flux.worker")
_STEP_EVENTS = (StepStart, StepComplete, StepRetry, StepFailed, StepSkip, StepSuspend)

_EXIT_CODES = "Exit code: 0 completed, 1 failed, rolled back or cancelled, 3 suspended, 2 bad usage."


async def _watch(engine: FluxEngine, as_json: bool, drive: Callable[[], Awaitable[RunResult]]) -> RunResult:
    """Run ``drive()`` with the live step view (unless ``as_json``), then print the result."""
    out = console()
    if as_json:
        result = await drive()
        click.echo(dump(result_document(result)))
        return result
    view = StepView(out)
    for event in _STEP_EVENTS:
        engine.on(event.name, view.on_event)
    if view.live:
        with Live(view, console=out, refresh_per_second=12):
            result = await drive()
    else:
        result = await drive()
    if not result.created:
        out.print(f"(the idempotency key returned run {result.id}, started before)")
    out.print(result_line(result))
    if result.status == "suspended":
        out.print(_next_steps(result))
    return result


def _next_steps(result: RunResult) -> str:
    """What to do about a suspended run: the signal it waits for, and how to continue it."""
    waiting = [r for r in result.history if r.status == "suspended"]
    signal = waiting[-1].waiting_for if waiting else None
    if signal is None:
        return "it waits (a timer or a child run); a worker continues it: flux worker --app MODULE"
    return (
        f"it waits for signal {signal!r}: flux signal {result.id} {signal} --payload JSON, "
        f"then flux resume {result.id} (or let a worker continue it)"
    )


def _finish(result: RunResult) -> None:
    raise SystemExit(exit_code(result.status.value))


@command(
    short_help="Run a workflow with a live view of its steps.",
    epilog='Example: flux run examples.order_fulfillment:order_flow --input \'{"order_id": "A-1"}\'\n\n'
    + _EXIT_CODES,
)
@click.argument("workflow", metavar="MODULE:WF")
@click.option("--input", "input_", metavar="JSON|@FILE", help="The run's input as JSON, or @file.json.")
@click.option("--run-id", metavar="ID", help="Use this run id (default: a new random one).")
@click.option("--key", metavar="KEY", help="Idempotency key: a key already used returns that run.")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="Label the run (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON document, no live view.")
def run(
    opts: Options,
    workflow: str,
    input_: str | None,
    run_id: str | None,
    key: str | None,
    labels: tuple[str, ...],
    as_json: bool,
) -> None:
    """Run a workflow, showing each step as it runs, then print the result.

    WORKFLOW is MODULE:ATTRIBUTE (a Workflow or a builder), or a name among --app's workflows.
    """
    plan = load_workflow(workflow, opts.app)
    payload = parse_json(input_, "--input") if input_ is not None else None
    tags = parse_labels(labels)

    async def body(engine: FluxEngine) -> RunResult:
        async def drive() -> RunResult:
            return await engine.execute(plan, payload, run_id=run_id, idempotency_key=key, labels=tags)

        return await _watch(engine, as_json, drive)

    _finish(with_engine(opts, body, create=True, workflows=[plan]))


def _continue(
    opts: Options, run_id: str, as_json: bool, op: Callable[[FluxEngine, RunRecord], Awaitable[RunResult]]
) -> None:
    async def body(engine: FluxEngine) -> RunResult:
        run = await find_run(engine, run_id)
        need_plan(opts, run)
        return await _watch(engine, as_json, lambda: op(engine, run))

    _finish(with_engine(opts, body))


def _step_of(opts: Options, run: RunRecord, step: str) -> str | int:
    """A step named on the command line: a name of the run's plan, or an index."""
    names = opts.workflows()[run.workflow].step_names
    if step in names:
        return step
    if step.isdigit():
        return int(step)
    hint = close(step, names, what="steps")
    raise CliError(f"workflow {run.workflow!r} has no step {step!r}{hint}")


@command(
    short_help="Continue a stopped run.",
    epilog=f"Example: flux --app myapp resume 3f2a9c0d... --from-step charge\n\n{_EXIT_CODES}",
)
@click.argument("run_id", metavar="RUN")
@click.option(
    "--from-step", metavar="STEP", help="Run again from this step (name or index), whatever the run's state."
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON document.")
def resume(opts: Options, run_id: str, from_step: str | None, as_json: bool) -> None:
    """Continue a stopped run (crashed, failed or suspended); needs --app to know its workflow."""

    async def op(engine: FluxEngine, run: RunRecord) -> RunResult:
        step = None if from_step is None else _step_of(opts, run, from_step)
        return await engine.resume(run.id, from_step=step)

    _continue(opts, run_id, as_json, op)


@command(
    short_help="Continue a failed run from a step.",
    epilog=f"Example: flux --app myapp retry 3f2a9c0d... charge\n\n{_EXIT_CODES}",
)
@click.argument("run_id", metavar="RUN")
@click.argument("step", metavar="STEP")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON document.")
def retry(opts: Options, run_id: str, step: str, as_json: bool) -> None:
    """Continue a failed or rolled-back run from STEP; needs --app."""

    async def op(engine: FluxEngine, run: RunRecord) -> RunResult:
        return await engine.retry_step(run.id, str(_step_of(opts, run, step)))

    _continue(opts, run_id, as_json, op)


@command(
    short_help="Execute a finished run again as a new run.",
    epilog=f"Example: flux --app myapp replay 3f2a9c0d...\n\n{_EXIT_CODES}",
)
@click.argument("run_id", metavar="RUN")
@click.option("--json", "as_json", is_flag=True, help="Print the new run's result as one JSON document.")
def replay(opts: Options, run_id: str, as_json: bool) -> None:
    """Execute a finished run again as a new run: recorded steps are re-applied, commit steps
    are called again; needs --app."""

    async def op(engine: FluxEngine, run: RunRecord) -> RunResult:
        return await engine.replay(run.id)

    _continue(opts, run_id, as_json, op)


@command(
    short_help="Deliver a signal to a run.",
    epilog="""Example: flux signal 3f2a9c0d... approved --payload '{"by": "ann"}'""",
)
@click.argument("run_id", metavar="RUN")
@click.argument("name", metavar="NAME")
@click.option("--payload", metavar="JSON|@FILE", help="The signal's payload (JSON, or @file.json).")
@click.option("--json", "as_json", is_flag=True, help="Print the stored signal as JSON.")
def signal(opts: Options, run_id: str, name: str, payload: str | None, as_json: bool) -> None:
    """Deliver a signal to a run, durably. A worker (or flux resume) continues the run."""
    value = parse_json(payload, "--payload") if payload is not None else None

    async def body(engine: FluxEngine) -> dict[str, Any]:
        run = await find_run(engine, run_id)
        return (await engine.signal(run.id, name, value)).to_json()

    stored = with_engine(opts, body)
    if as_json:
        click.echo(json.dumps(stored, ensure_ascii=False))
    else:
        click.echo(
            f"signal {name!r} stored for run {stored['run_id']}; a worker or `flux resume` continues it"
        )


@command(
    short_help="Cancel a run.",
    epilog='Example: flux --app myapp cancel 3f2a9c0d... --reason "customer asked" --compensate',
)
@click.argument("run_id", metavar="RUN")
@click.option("--reason", metavar="TEXT", help="Why (stored with the run).")
@click.option("--compensate", is_flag=True, help="Compensate completed steps first.")
@click.option("--json", "as_json", is_flag=True, help="Print the run's result as one JSON document.")
def cancel(opts: Options, run_id: str, reason: str | None, compensate: bool, as_json: bool) -> None:
    """Cancel a run. A run another process drives is asked to stop and stops within a moment."""

    async def body(engine: FluxEngine) -> RunResult:
        run = await find_run(engine, run_id)
        if not run.status.finished and run.lease_expires_at is None:  # nobody drives it: we do
            need_plan(opts, run)
        return await engine.cancel(run.id, reason, compensate=compensate)

    result = with_engine(opts, body)
    if as_json:
        click.echo(dump(result_document(result)))
    else:
        console().print(result_line(result))


@command(
    short_help="Drive pending, due and orphaned runs.",
    epilog="Example: flux worker --app myapp --concurrency 4  (stop with Ctrl-C or SIGTERM)",
)
@click.option(
    "--concurrency", default=10, show_default=True, type=click.IntRange(min=1), help="Runs driven at once."
)
@click.option(
    "--grace-period",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds running steps get to finish on stop; then their runs are released.",
)
def worker(opts: Options, concurrency: int, grace_period: float) -> None:
    """Drive pending, due and orphaned runs of --app's workflows until SIGTERM or SIGINT, and
    fire the cron schedules of its `schedules = [...]`, if any."""
    if not opts.app:
        raise CliError(
            "flux worker needs --app MODULE, whose `workflows = [...]` lists the workflows to drive"
        )
    setup_logging(opts.verbose, floor=logging.INFO)
    names = ", ".join(sorted(opts.workflows()))
    schedules = list(getattr(import_module(opts.app), "schedules", ()))

    async def body(engine: FluxEngine) -> None:
        try:
            runner = engine.worker(concurrency=concurrency, grace_period=grace_period, schedules=schedules)
        except (TypeError, ValueError) as exc:
            raise CliError(f"{opts.app}.schedules: {exc}") from exc
        firing = f"; schedules: {', '.join(s.name for s in schedules)}" if schedules else ""
        logger.info(
            "worker %s started on %s for %s (concurrency %d)%s",
            engine.owner, opts.url, names, concurrency, firing,
        )  # fmt: skip
        await runner.run(handle_signals=True)
        logger.info("worker %s stopped; %d run(s) driven", engine.owner, runner.completed)

    with_engine(opts, body, create=True)
