"""The ``flux`` command group, the options every command takes, and what commands share."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import attrs
import click

from flux.cli._load import CliError, app_workflows, close
from flux.engine import FluxEngine
from flux.errors import InvalidInputError
from flux.labels import check_labels
from flux.plan import Workflow
from flux.records import RunFilter, RunRecord
from flux.storage import DEFAULT_URL, SQLiteStorage, Storage, from_url

T = TypeVar("T")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_SUSPENDED = 0, 1, 2, 3
_EXIT_BY_STATUS = {"completed": EXIT_OK, "suspended": EXIT_SUSPENDED}


def exit_code(status: str) -> int:
    """0 completed, 3 suspended (waits for a signal or a child run), 1 any other end."""
    return _EXIT_BY_STATUS.get(status, EXIT_FAILED)


@attrs.define
class Options:
    """``--db``, ``--app`` and ``-v``: given before the command name, after it, or both (the
    later one wins; ``-v`` adds up)."""

    db: str | None = None
    app: str | None = None
    verbose: int = 0

    def merged(self, db: str | None, app: str | None, verbose: int) -> Options:
        """These options with a subcommand's own: a value given there wins, ``-v`` adds up."""
        return Options(db=db or self.db, app=app or self.app, verbose=self.verbose + verbose)

    @property
    def url(self) -> str:
        """The storage URL: ``--db``, else ``FLUX_DB``, else ``sqlite:///flux.db``."""
        return self.db or os.environ.get("FLUX_DB") or DEFAULT_URL

    def workflows(self) -> dict[str, Workflow[Any]]:
        """The workflows ``--app`` lists (none without ``--app``)."""
        return app_workflows(self.app) if self.app else {}


def _common(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option(
        "--db", metavar="URL", default=None,
        help="Storage URL or SQLite file path [env FLUX_DB; default sqlite:///flux.db].",
    )(fn)  # fmt: skip
    fn = click.option(
        "--app", metavar="MODULE", default=None,
        help="Module whose `workflows = [...]` names the workflows to know.",
    )(fn)  # fmt: skip
    return click.option("-v", "--verbose", count=True, help="Log INFO lines (-vv: DEBUG) to stderr.")(fn)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@_common
@click.pass_context
def cli(ctx: click.Context, db: str | None, app: str | None, verbose: int) -> None:
    """flux: run, inspect and operate durable workflows.

    \b
    Examples:
      flux run examples.order_fulfillment:order_flow --input '{"order_id": "A-1"}'
      flux list --status failed
      flux show RUN_ID
    """
    ctx.obj = Options(db=db, app=app, verbose=verbose)


def command(**settings: Any) -> Callable[[Callable[..., Any]], click.Command]:
    """A subcommand of ``flux`` taking the common options; the function gets ``Options`` first."""

    def decorate(fn: Callable[..., Any]) -> click.Command:
        @functools.wraps(fn)
        def wrapper(db: str | None, app: str | None, verbose: int, **kwargs: Any) -> Any:
            parent = click.get_current_context().find_object(Options) or Options()
            opts = parent.merged(db, app, verbose)
            setup_logging(opts.verbose)
            return fn(opts, **kwargs)

        return cli.command(**settings)(_common(wrapper))

    return decorate


def setup_logging(verbose: int, floor: int = logging.WARNING) -> None:
    """Send the ``flux`` loggers to stderr: WARNING, INFO with ``-v``, DEBUG with ``-vv``."""
    level = min(floor, logging.INFO if verbose == 1 else logging.DEBUG if verbose > 1 else logging.WARNING)
    root = logging.getLogger("flux")
    if not any(getattr(h, "_flux_cli", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler._flux_cli = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)


def parse_labels(pairs: Iterable[str]) -> dict[str, str]:
    """``["k=v", ...]`` as checked labels."""
    labels = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq:
            raise CliError(f"--label {pair!r} is not KEY=VALUE; write for example --label tenant=acme")
        labels[key] = value
    try:
        return check_labels(labels)
    except InvalidInputError as exc:
        raise CliError(str(exc)) from exc


def open_storage(opts: Options, *, create: bool) -> Storage:
    """The storage ``--db`` names; a SQLite file must exist unless the command ``create``s runs."""
    try:
        storage = from_url(opts.url)
    except ValueError as exc:
        raise CliError(f"--db: {exc}") from exc
    if not create and isinstance(storage, SQLiteStorage) and _missing(storage.path):
        raise CliError(
            f"no flux database at {storage.path!r}; run a workflow first (flux run ...) or point "
            "--db / FLUX_DB at an existing one"
        )
    return storage


def _missing(path: str) -> bool:
    return path != ":memory:" and not path.startswith("file:") and not os.path.exists(path)


def with_engine(
    opts: Options,
    body: Callable[[FluxEngine], Awaitable[T]],
    *,
    create: bool = False,
    workflows: Sequence[Workflow[Any]] = (),
) -> T:
    """Run ``body(engine)`` on an engine over ``--db`` with ``--app``'s workflows registered."""
    known = [*opts.workflows().values(), *workflows]
    storage = open_storage(opts, create=create)

    async def main() -> T:
        async with FluxEngine(storage=storage, workflows=known) as engine:
            return await body(engine)

    return asyncio.run(main())


async def find_run(engine: FluxEngine, run_id: str) -> RunRecord:
    """The stored run ``run_id``; a CliError listing close ids when there is none."""
    run = await engine.storage.load(run_id)
    if run is not None:
        return run
    recent = [r.id for r in await engine.storage.list(RunFilter(limit=500))]
    hint = close(run_id, recent, what="runs")
    raise CliError(f"no run {run_id!r} in this database{hint} (flux list shows runs)")


def need_plan(opts: Options, run: RunRecord) -> None:
    """Refuse early when ``--app`` does not list the run's workflow."""
    if run.workflow not in opts.workflows():
        where = f"--app {opts.app} does not list it" if opts.app else "no --app names it"
        raise CliError(
            f"run {run.id} is of workflow {run.workflow!r} and {where}; pass --app MODULE whose "
            "`workflows = [...]` includes it"
        )
