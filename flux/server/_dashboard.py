"""The dashboard: server-rendered HTML pages over the engine's public API.

``/`` lists runs (status filters, search by id or ``key:value`` label, refreshed live),
``/runs/{id}`` shows one run (step timeline, plan, data, outputs, control buttons),
``/workflows`` the served workflows, ``/login`` asks for the API token once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from html import escape
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response

from flux.errors import FluxError, RunNotFoundError
from flux.plan import Workflow
from flux.result import RunResult
from flux.server._api import FluxApi
from flux.server._assets import CSS, JS
from flux.server._auth import COOKIE, token_matches
from flux.server._http import ApiError, read_body
from flux.server._timeline import logs_html, timeline_html
from flux.status import RunStatus

_LIST_LIMIT = 100


def page(title: str, body: str) -> str:
    """A whole dashboard page around ``body``."""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<meta name=viewport content='width=device-width'><title>{escape(title)} · flux</title>"
        "<link rel=stylesheet href='/static/flux.css'></head><body>"
        "<header><a class=brand href='/'>flux</a><a href='/'>Runs</a>"
        "<a href='/workflows'>Workflows</a></header>"
        f"<main>{body}</main><script src='/static/flux.js'></script></body></html>"
    )


def login_page(path: str) -> str:
    """The form that asks for the API token, then returns to ``path``."""
    target = local_path(path)
    return page(
        "Sign in",
        "<h1>API token</h1><p class=muted>This server needs its API token once; the browser keeps it "
        "in a cookie.</p><form method=post action='/login'>"
        f"<input type=hidden name=next value='{escape(target, quote=True)}'>"
        "<input type=password name=token autofocus placeholder='token' aria-label='API token'> "
        "<button type=submit>Sign in</button></form>",
    )


def local_path(path: str) -> str:
    """``path`` if it stays on this server (``/runs/1``), else ``/``: no open redirects."""
    if path.startswith("/") and not path.startswith("//") and "\\" not in path:
        return path
    return "/"


def _status(value: str) -> str:
    return f"<span class='status s-{escape(value)}'>{escape(value.replace('_', ' '))}</span>"


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else ""


class Dashboard:
    """The dashboard's endpoints."""

    def __init__(self, api: FluxApi, token: str | None) -> None:
        self.api = api
        self.token = token

    async def css(self, request: Request) -> Response:
        return PlainTextResponse(CSS, media_type="text/css")

    async def js(self, request: Request) -> Response:
        return PlainTextResponse(JS, media_type="text/javascript")

    async def login_form(self, request: Request) -> Response:
        return HTMLResponse(login_page(request.query_params.get("next", "/")))

    async def login(self, request: Request) -> Response:
        form = dict(_form_fields(await read_body(request, self.api.max_body)))
        target = form.get("next", "/")
        target = local_path(target)
        given = form.get("token", "")
        if self.token is not None and not token_matches(given, self.token):
            return HTMLResponse(
                login_page(target).replace("<form", "<p class=notice>Wrong token.</p><form"), status_code=401
            )
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(COOKIE, given, httponly=True, samesite="strict")
        return response

    async def runs(self, request: Request) -> Response:
        query = request.query_params
        status, search = query.get("status", ""), query.get("q", "").strip()
        workflow = query.get("workflow") or None
        rows = await self._rows(status, search, workflow)
        if query.get("partial"):
            return HTMLResponse(rows)
        choices = [("", "all"), *((s.value, s.value.replace("_", " ")) for s in RunStatus)]
        filters = "".join(
            f"<a class='{'on' if value == status else ''}' "
            f"href='/?{_query(status=value, q=search, workflow=workflow)}'>{escape(label)}</a>"
            for value, label in choices
        )
        body = (
            "<h1>Runs</h1><div class=filters>"
            f"{filters}<form method=get><input type=hidden name=status value='{escape(status, quote=True)}'>"
            f"<input type=hidden name=workflow value='{escape(workflow or '', quote=True)}'>"
            f"<input type=search name=q value='{escape(search, quote=True)}' "
            "placeholder='run id or label key:value' aria-label='search runs'></form></div>"
            "<table><thead><tr><th>Run</th><th>Workflow</th><th>Status</th><th>Labels</th><th>Created</th>"
            f"<th>Duration</th></tr></thead><tbody id=runs data-live=on>{rows}</tbody></table>"
        )
        return HTMLResponse(page("Runs", body))

    async def _rows(self, status: str, search: str, workflow: str | None) -> str:
        engine = self.api.engine
        statuses = [status] if status in {s.value for s in RunStatus} else None
        try:
            if search and ":" in search:
                key, _, value = search.partition(":")
                runs = await engine.list(workflow, statuses, limit=_LIST_LIMIT, labels={key: value})
            elif search:
                runs = [await engine.get(search)]
            else:
                runs = await engine.list(workflow, statuses, limit=_LIST_LIMIT)
        except RunNotFoundError:
            runs = []
        except (FluxError, ValueError) as exc:  # a label key or run id that cannot exist
            return f"<tr><td colspan=6 class=muted>{escape(str(exc))}</td></tr>"
        if not runs:
            return "<tr><td colspan=6 class=muted>No runs.</td></tr>"
        return "".join(_row(run) for run in runs)

    async def run(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        try:
            run = await self.api.engine.get(run_id)
        except RunNotFoundError:
            return HTMLResponse(page("Not found", f"<h1>No run {escape(run_id)}</h1>"), status_code=404)
        plan = self.api.workflows.get(run.workflow)
        detail = _run_detail(run, plan, self.api.engine.clock.now())
        if request.query_params.get("partial"):
            return HTMLResponse(detail)
        live = "off" if run.status.finished else "on"
        body = f"<h1>Run <code>{escape(run.id)}</code></h1><div id=run data-live={live}>{detail}</div>"
        return HTMLResponse(page(f"Run {run.id}", body))

    async def workflows(self, request: Request) -> Response:
        cards = "".join(_workflow_card(plan) for plan in self.api.workflows.values())
        return HTMLResponse(
            page("Workflows", f"<h1>Workflows</h1>{cards or '<p class=muted>None served.</p>'}")
        )


def _query(**params: str | None) -> str:
    return escape(urlencode({k: v for k, v in params.items() if v}), quote=True)


def _form_fields(body: bytes) -> list[tuple[str, str]]:
    try:
        return parse_qsl(body.decode(), keep_blank_values=True)
    except UnicodeDecodeError:
        raise ApiError(400, "BadRequest", "the form is not UTF-8") from None


def _row(run: RunResult) -> str:
    labels = " ".join(f"<code>{escape(k)}={escape(v)}</code>" for k, v in sorted(run.labels.items()))
    duration = f"{run.duration:.2f}s" if run.duration is not None else ""
    rid = escape(run.id, quote=True)
    return (
        f"<tr data-run='{rid}'><td class=id><a href='/runs/{rid}'>"
        f"{escape(run.id[:12])}</a></td><td>{escape(run.workflow)}</td><td>{_status(run.status.value)}</td>"
        f"<td>{labels}</td><td>{_when(run.created_at)}</td><td>{duration}</td></tr>"
    )


def _run_detail(run: RunResult, plan: Workflow[Any] | None, now: datetime) -> str:
    labels = ", ".join(f"{k}={v}" for k, v in sorted(run.labels.items())) or "none"
    error = (
        f"<dt>Error</dt><dd>{escape(run.error.type)}: {escape(run.error.message)}</dd>" if run.error else ""
    )
    meta = (
        f"<dl class=meta><dt>Status</dt><dd id=run-status data-status='{run.status.value}'>"
        f"{_status(run.status.value)}</dd><dt>Workflow</dt><dd>{escape(run.workflow)}</dd>"
        f"<dt>Created</dt><dd>{_when(run.created_at)}</dd><dt>Finished</dt><dd>{_when(run.finished_at)}</dd>"
        f"<dt>Labels</dt><dd>{escape(labels)}</dd>{error}</dl>"
    )
    live = "off" if run.status.finished else "on"
    return (
        f"<span data-live-state={live}></span>{meta}{_actions(run, plan)}"
        f"<h2>Timeline</h2>{timeline_html(run.history, run.created_at, run.finished_at or now)}"
        f"{logs_html(run.history)}"
        f"{'<h2>Plan</h2>' + _plan_html(plan, {r.step: r.status.value for r in run.history}) if plan else ''}"
        f"<h2>Data</h2><pre id=run-data>{escape(_pretty(run.data))}</pre>"
        f"<h2>Outputs</h2><pre id=run-outputs>{escape(_pretty(run.outputs))}</pre>"
        f"<h2>Input</h2><pre>{escape(_pretty(run.input))}</pre>"
    )


def _actions(run: RunResult, plan: Workflow[Any] | None) -> str:
    rid = escape(run.id, quote=True)
    parts = []
    if not run.status.finished:
        signals = sorted(plan.signals) if plan else []
        waiting = [r.waiting_for for r in run.history if r.waiting_for and r.status == "suspended"]
        names = list(dict.fromkeys([*waiting, *signals]))
        if names:
            options = "".join(f"<option>{escape(n)}</option>" for n in names)
            parts.append(
                f"<select id=signal-name aria-label='signal'>{options}</select>"
                "<input id=signal-payload placeholder='payload (JSON)' aria-label='payload'>"
                f"<button data-action=signal data-run='{rid}'>Signal</button>"
            )
        parts.append(f"<button data-action=cancel data-run='{rid}'>Cancel</button>")
    if run.status in (RunStatus.FAILED, RunStatus.ROLLED_BACK, RunStatus.SUSPENDED, RunStatus.PENDING):
        parts.append(f"<button data-action=resume data-run='{rid}'>Resume</button>")
    if run.status in (RunStatus.FAILED, RunStatus.ROLLED_BACK) and plan is not None:
        failed = [r.step for r in run.history if r.status == "failed"]
        options = "".join(
            f"<option{' selected' if failed and name == failed[-1] else ''}>{escape(name)}</option>"
            for name in plan.step_names
        )
        parts.append(
            f"<select id=retry-step aria-label='step'>{options}</select>"
            f"<button data-action=retry data-run='{rid}'>Retry from step</button>"
        )
    return f"<div class=actions>{''.join(parts)}<span id=action-result class=muted></span></div>"


def _plan_html(plan: Workflow[Any], states: Mapping[str, str]) -> str:
    """The plan drawn as boxes in order (double border: commit steps), each coloured by the
    status of its latest visit in ``states``, with the Mermaid source beneath."""
    nodes = []
    for spec in plan.steps:
        kind = " commit" if spec.kind == "commit" else ""
        state = escape(states.get(spec.name, ""), quote=True)
        name = escape(spec.name)
        nodes.append(
            f"<span class='node{kind} st-{state}' title='{escape(spec.kind, quote=True)}'>{name}</span>"
        )
    return (
        f"<div class=plan>{'<span class=arrow>→</span>'.join(nodes)}</div>"
        f"<details><summary class=muted>Mermaid</summary><pre>{escape(plan.to_mermaid())}</pre></details>"
    )


def _workflow_card(plan: Workflow[Any]) -> str:
    signals = ", ".join(sorted(plan.signals)) or "none"
    runs = escape(f"/?{urlencode({'workflow': plan.name})}", quote=True)
    return (
        f"<h2>{escape(plan.name)}</h2><dl class=meta><dt>Fingerprint</dt><dd><code>{escape(plan.fingerprint)}"
        f"</code></dd><dt>Input</dt><dd>{escape(plan.codec.type_name)}</dd><dt>Signals</dt>"
        f"<dd>{escape(signals)}</dd><dt>Runs</dt><dd><a href='{runs}'>its runs</a></dd></dl>"
        f"{_plan_html(plan, {})}"
    )


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)
