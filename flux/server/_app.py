"""``create_app``: the ASGI application serving the API, webhooks and dashboard of an engine."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from flux._scheduler import check_schedules
from flux.builder import WorkflowBuilder, as_workflow
from flux.engine import FluxEngine
from flux.plan import Workflow
from flux.schedule import Schedule
from flux.server._api import FluxApi, guarded
from flux.server._auth import TokenAuth
from flux.server._dashboard import Dashboard, login_page
from flux.server._http import error_response
from flux.server._webhooks import Webhook

DEFAULT_MAX_BODY = 1024 * 1024
"""The largest request body accepted by default (1 MiB); bigger ones get 413."""

TOKEN_ENV = "FLUX_API_TOKEN"


def create_app(
    engine: FluxEngine,
    *,
    workflows: Iterable[Workflow[Any] | WorkflowBuilder[Any]] = (),
    schedules: Iterable[Schedule] = (),
    webhooks: Iterable[Webhook] = (),
    token: str | None = None,
    max_body: int = DEFAULT_MAX_BODY,
    worker: bool = True,
) -> Starlette:
    """An ASGI app serving ``engine``: the REST API under ``/api``, webhooks under ``/hooks``
    and the dashboard at ``/``.

    Args:
        engine: the engine whose runs are served. The app opens it on startup and closes it
            on shutdown.
        workflows: the workflows the API can start (those of webhooks and schedules are
            served too); all are registered with the engine.
        schedules: cron :class:`~flux.Schedule` objects, fired by the app's worker.
        webhooks: :class:`Webhook` triggers, mounted at ``POST /hooks/{name}``.
        token: the bearer token every API and dashboard request must carry (default: the
            ``FLUX_API_TOKEN`` environment variable; none means no auth).
        max_body: the largest request body in bytes (bigger ones are refused with 413).
        worker: run a worker in the app (driving started runs, timers and schedules);
            False when separate worker processes do that.

    Raises:
        ValueError: duplicate workflow, webhook or schedule names; schedules without a
            worker; a ``max_body`` below 1.
    """
    if max_body < 1:
        raise ValueError(f"max_body must be a positive number of bytes, got {max_body}")
    schedule_list = check_schedules(schedules)
    if schedule_list and not worker:
        raise ValueError(
            "schedules fire in a worker; pass worker=True, or give the schedules to the worker "
            "processes with engine.worker(schedules=...)"
        )
    hooks = list(webhooks)
    for hook in hooks:
        if not isinstance(hook, Webhook):
            raise TypeError(f"webhooks must be flux.server.Webhook objects, got {hook!r}")
    served = (
        [as_workflow(w) for w in workflows]
        + [h.workflow for h in hooks]
        + [s.workflow for s in schedule_list]
    )
    for plan in served:
        engine.register(plan)
    secret = token if token is not None else os.environ.get(TOKEN_ENV) or None
    api = FluxApi(engine, served, hooks, max_body)
    dashboard = Dashboard(api, secret)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await engine.start_engine()
        try:
            if worker:
                async with engine.worker(schedules=schedule_list):
                    yield
            else:
                yield
        finally:
            await api.stop()
            await engine.close()

    routes = [
        Route("/api/openapi.json", guarded(api.openapi), methods=["GET"]),
        Route("/api/workflows", guarded(api.list_workflows), methods=["GET"]),
        Route("/api/workflows/{name}/runs", guarded(api.start_run), methods=["POST"]),
        Route("/api/runs", guarded(api.list_runs), methods=["GET"]),
        Route("/api/runs/{run_id}", guarded(api.get_run), methods=["GET"]),
        Route("/api/runs/{run_id}/signals/{name}", guarded(api.signal), methods=["POST"]),
        Route("/api/runs/{run_id}/cancel", guarded(api.cancel), methods=["POST"]),
        Route("/api/runs/{run_id}/resume", guarded(api.resume), methods=["POST"]),
        Route("/api/runs/{run_id}/retry/{step}", guarded(api.retry), methods=["POST"]),
        Route("/hooks/{name}", guarded(api.hook), methods=["POST"]),
        Route("/", dashboard.runs, methods=["GET"]),
        Route("/runs/{run_id}", dashboard.run, methods=["GET"]),
        Route("/workflows", dashboard.workflows, methods=["GET"]),
        Route("/login", dashboard.login_form, methods=["GET"]),
        Route("/login", guarded(dashboard.login), methods=["POST"]),
        Route("/static/flux.css", dashboard.css, methods=["GET"]),
        Route("/static/flux.js", dashboard.js, methods=["GET"]),
    ]
    middleware = [Middleware(TokenAuth, token=secret, login_page=login_page)] if secret else []
    app = Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error},
    )
    app.state.flux_token_required = secret is not None
    return app


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unknown paths and methods: a JSON error under ``/api``, plain text elsewhere."""
    assert isinstance(exc, HTTPException)
    if request.url.path.startswith("/api"):
        kind = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "HTTPError")
        message = f"{request.method} {request.url.path}: {exc.detail} (GET /api/openapi.json lists the API)"
        return error_response(exc.status_code, kind, message)
    return PlainTextResponse(str(exc.detail), status_code=exc.status_code, headers=exc.headers)
