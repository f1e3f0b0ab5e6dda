"""``flux check``: which stored runs the workflows of an app would strand."""

from __future__ import annotations

import json
from typing import Any

import click

from flux.cli._base import EXIT_FAILED, Options, command, with_engine
from flux.cli._load import CliError, as_workflow, import_module
from flux.engine import FluxEngine
from flux.plan import Workflow
from flux.records import RunFilter
from flux.status import RunStatus
from flux.testing import StrandedRun, check_compatible

_UNFINISHED = [status for status in RunStatus if not status.finished]


def _versions(app: str) -> dict[str, list[Workflow[Any]]]:
    """Every workflow ``app`` lists, by name, in list order (the last one is the current one)."""
    listed = getattr(import_module(app), "workflows", None)
    if not isinstance(listed, list | tuple):
        raise CliError(f"module {app!r} has no `workflows` list; add `workflows = [my_flow, ...]` to it")
    found: dict[str, list[Workflow[Any]]] = {}
    for index, item in enumerate(listed):
        plan = as_workflow(item, f"{app}.workflows[{index}]")
        found.setdefault(plan.name, []).append(plan)
    return found


@command(epilog="Example: flux check --app myapp.flows   (before deploying a changed workflow)")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per stranded run (NDJSON).")
def check(opts: Options, as_json: bool) -> None:
    """List stored unfinished runs that --app's workflows could not continue (exit 1 if any).

    A run is stranded when its workflow is not in the app, or when no version the app lists has
    the plan fingerprint it started with. To keep such runs going, list the older version too,
    before the current one: the last workflow of a name in `workflows = [...]` is the current.
    """
    if not opts.app:
        raise CliError(
            "flux check needs --app MODULE, whose `workflows = [...]` lists the workflows to check"
        )
    versions = _versions(opts.app)

    async def body(engine: FluxEngine) -> list[StrandedRun]:
        stranded: list[StrandedRun] = []
        for plans in versions.values():
            stranded += await check_compatible(engine.storage, plans[-1], versions=plans[:-1])
        for run in reversed(await engine.storage.list(RunFilter(status=_UNFINISHED))):
            if run.workflow not in versions:
                missing = f"workflow {run.workflow!r} is not in {opts.app}.workflows"
                stranded.append(
                    StrandedRun(
                        run_id=run.id,
                        workflow=run.workflow,
                        status=run.status,
                        fingerprint=run.fingerprint,
                        differences=(missing,),
                    )
                )
        return stranded

    stranded = with_engine(opts, body)
    for run in stranded:
        if as_json:
            click.echo(json.dumps({
                "run_id": run.run_id, "workflow": run.workflow, "status": run.status.value,
                "fingerprint": run.fingerprint, "differences": list(run.differences),
            }, ensure_ascii=False))  # fmt: skip
        else:
            click.echo(f"stranded: {run}")
    if not as_json:
        names = ", ".join(sorted(versions))
        click.echo(
            f"{len(stranded)} unfinished run(s) would be stranded by {opts.app} ({names})"
            if stranded
            else f"ok: every unfinished run can continue on {opts.app} ({names})",
            err=bool(stranded),
        )
    if stranded:
        raise SystemExit(EXIT_FAILED)
