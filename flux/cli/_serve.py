"""Commands over ``flux.server``: serve (the API, webhooks, schedules, dashboard) and bundle."""

from __future__ import annotations

from types import ModuleType

import click

from flux.cli._base import Options, command
from flux.cli._load import CliError


def _server() -> ModuleType:
    """``flux.server``, or a CliError naming the extra to install."""
    try:
        import flux.server
    except ImportError as exc:
        raise CliError(f"{exc}; then run the command again") from exc
    return flux.server


@command(
    epilog="Example: FLUX_API_TOKEN=s3cret flux serve --app myapp --host 0.0.0.0 --port 8000",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port.")
@click.option(
    "--workers/--no-workers",
    default=True,
    show_default=True,
    help="Run a worker in the server (drives runs, timers and schedules).",
)
@click.option(
    "--insecure-bind",
    is_flag=True,
    help="Serve on a non-loopback host without an API token (FLUX_API_TOKEN).",
)
def serve(opts: Options, host: str, port: int, workers: bool, insecure_bind: bool) -> None:
    """Serve the REST API, webhooks, schedules and dashboard of --app MODULE with uvicorn.

    MODULE's `app` (made by flux.server.create_app) is served; a module without one is served
    from its `engine`, `workflows`, `webhooks` and `schedules` (the engine on --db when it
    defines none). Without FLUX_API_TOKEN only loopback addresses are served.
    """
    if not opts.app:
        raise CliError(
            "flux serve needs --app MODULE: a module with `app = create_app(...)` or `workflows = [...]`"
        )
    server = _server()
    try:
        app = server.load_app(opts.app, db=opts.db, worker=workers)
        server.check_bind(app, host, insecure_bind=insecure_bind)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    click.echo(f"flux: serving {opts.app} on http://{host}:{port} (dashboard at /, API under /api)", err=True)
    server.serve(app, host=host, port=port, insecure_bind=insecure_bind)


@command(epilog="Example: flux bundle orders:order_flow --out build/orders --postgres")
@click.argument("target", metavar="MODULE:WF")
@click.option("--out", required=True, metavar="DIR", help="The folder to write (new or empty).")
@click.option(
    "--postgres", is_flag=True, help="docker-compose.yml with PostgreSQL (FLUX_DB=postgresql://...)."
)
def bundle(opts: Options, target: str, out: str, postgres: bool) -> None:
    """Write a deployable folder serving MODULE:WF: app.py (POST /run plus the API),
    requirements.txt, Dockerfile, docker-compose.yml and a README."""
    try:
        folder = _server().bundle(target, out, postgres=postgres)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    click.echo(f"wrote {folder}: cd {folder} && docker compose up --build (or: uvicorn app:app)")
