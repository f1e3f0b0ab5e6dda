"""Run an app with uvicorn, and find the app a module describes (what ``flux serve`` does)."""

from __future__ import annotations

import importlib
import ipaddress
import os
import sys
from types import ModuleType
from typing import Any

import uvicorn
from starlette.applications import Starlette

from flux.engine import FluxEngine
from flux.server._app import create_app
from flux.storage import DEFAULT_URL, from_url


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(app: Starlette, host: str, *, insecure_bind: bool = False) -> None:
    """Refuse to serve an app without a token on anything but a loopback address.

    Raises:
        ValueError: ``host`` is not loopback, the app has no token, and ``insecure_bind`` is
            False (the message says how to set a token).
    """
    if _is_loopback(host) or insecure_bind or getattr(app.state, "flux_token_required", False):
        return
    raise ValueError(
        f"refusing to serve on {host} without an API token: anyone who reaches it could start and "
        "cancel runs. Set FLUX_API_TOKEN (or create_app(token=...)), bind to 127.0.0.1, or pass "
        "--insecure-bind (insecure_bind=True) if something else guards the network"
    )


def serve(
    app: Starlette,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    insecure_bind: bool = False,
    log_level: str = "info",
) -> None:
    """Serve ``app`` with uvicorn until interrupted (Ctrl-C or SIGTERM).

    Raises:
        ValueError: see :func:`check_bind`.
    """
    check_bind(app, host, insecure_bind=insecure_bind)
    uvicorn.run(app, host=host, port=port, log_level=log_level)


def import_target(module: str) -> ModuleType:
    """Import a module by name (from the current directory too) or by ``.py`` path."""
    if module.endswith(".py"):  # a file path: import it by its stem from its folder
        folder, _, name = os.path.abspath(module).rpartition(os.sep)
        sys.path.insert(0, folder)
        module = name[:-3]
    elif os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise
        raise ValueError(
            f"cannot import module {module!r}; give a module name importable from the current "
            "directory (myapp or package.myapp) or a path to a .py file"
        ) from None


def load_app(
    module: str, *, db: str | None = None, worker: bool = True, token: str | None = None
) -> Starlette:
    """The app that ``module`` describes: its ``app`` attribute (made by ``create_app``), or
    one built from its ``engine``, ``workflows``, ``webhooks`` and ``schedules`` attributes.

    Without an ``engine`` attribute the engine uses the storage URL ``db`` (default: the
    ``FLUX_DB`` environment variable, else ``sqlite:///flux.db``).

    Raises:
        ValueError: the module cannot be imported; has neither ``app`` nor any of ``engine``,
            ``workflows``, ``webhooks`` or ``schedules``; or ``db`` is given for a module
            that makes its own app or engine (whose storage it already chose).
    """
    loaded = import_target(module)
    app = getattr(loaded, "app", None)
    if db is not None and (app is not None or hasattr(loaded, "engine")):
        raise ValueError(
            f"module {module!r} makes its own {'app' if app is not None else 'engine'}, which chose its "
            "storage; drop --db (or let the module read FLUX_DB)"
        )
    if app is not None:
        if not isinstance(app, Starlette):
            raise ValueError(f"{module}.app is {app!r}, not an app made by flux.server.create_app")
        return app
    # Schedules fire in a worker: without one here, `flux worker --app MODULE` fires them.
    fields = ("workflows", "webhooks", "schedules") if worker else ("workflows", "webhooks")
    parts: dict[str, Any] = {name: getattr(loaded, name) for name in fields if hasattr(loaded, name)}
    engine = getattr(loaded, "engine", None)
    if engine is None and not parts:
        raise ValueError(
            f"module {module!r} has no 'app' and none of 'engine', 'workflows', 'webhooks', 'schedules'; "
            "define app = flux.server.create_app(...) or a list named workflows"
        )
    if engine is None:
        engine = FluxEngine(storage=from_url(db or os.environ.get("FLUX_DB") or DEFAULT_URL))
    if not isinstance(engine, FluxEngine):
        raise ValueError(f"{module}.engine is {engine!r}, not a flux.FluxEngine")
    return create_app(engine, token=token, worker=worker, **parts)
