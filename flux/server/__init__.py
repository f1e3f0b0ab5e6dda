"""Serve flux over HTTP: a REST API, signed webhooks, cron schedules and a dashboard.

Needs the ``server`` extra (``pip install 'flux-workflow[server]'``: Starlette, uvicorn and
croniter).

>>> from flux import FluxEngine, create_workflow
>>> from flux.server import create_app
>>> flow = create_workflow("hello").step("greet", lambda ctx: "hi")
>>> app = create_app(FluxEngine(), workflows=[flow])
"""

try:
    import starlette  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("flux.server needs the server extra: pip install 'flux-workflow[server]'") from exc

from flux.server._app import DEFAULT_MAX_BODY, create_app
from flux.server._bundle import bundle, workflow_app
from flux.server._serve import check_bind, load_app, serve
from flux.server._webhooks import Webhook, webhook_signature

__all__ = [
    "DEFAULT_MAX_BODY",
    "Webhook",
    "bundle",
    "check_bind",
    "create_app",
    "load_app",
    "serve",
    "webhook_signature",
    "workflow_app",
]
