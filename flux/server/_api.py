"""The REST API under ``/api`` and the webhook endpoint: thin calls into the engine's public API."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import math
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from flux.engine import FluxEngine
from flux.errors import FluxError
from flux.plan import Workflow
from flux.result import RunResult
from flux.server._http import ApiError, expect_object, parse_json, read_body, read_json, run_json
from flux.server._openapi import openapi_document
from flux.server._webhooks import Webhook
from flux.status import RunStatus

logger = logging.getLogger("flux.server")

_RUN_FIELDS = frozenset({"input", "run_id", "idempotency_key", "labels"})
_CANCEL_FIELDS = frozenset({"reason", "compensate"})
_RESUMABLE = frozenset({RunStatus.PENDING, RunStatus.SUSPENDED, RunStatus.FAILED, RunStatus.ROLLED_BACK})
_RETRYABLE = frozenset({RunStatus.FAILED, RunStatus.ROLLED_BACK})
DEFAULT_LIMIT = 50
MAX_LIMIT = 500

Endpoint = Callable[[Request], Awaitable[Response]]


def _by_name(items: Iterable[Any], what: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for item in items:
        if item.name in found and found[item.name] != item:
            raise ValueError(f"two {what} are named {item.name!r}; give each a unique name")
        found[item.name] = item
    return found


class FluxApi:
    """The state the endpoints share: the engine, what is served, and runs driven in the background."""

    def __init__(
        self,
        engine: FluxEngine,
        workflows: Iterable[Workflow[Any]],
        webhooks: Iterable[Webhook],
        max_body: int,
    ) -> None:
        self.engine = engine
        self.webhooks: dict[str, Webhook] = _by_name(webhooks, "webhooks")
        self.workflows: dict[str, Workflow[Any]] = _by_name(workflows, "workflows")
        self.max_body = max_body
        self._background: set[asyncio.Task[RunResult]] = set()

    async def stop(self) -> None:
        """Cancel resumes still running in the background (their runs stay resumable)."""
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    def workflow(self, name: str) -> Workflow[Any]:
        """The served workflow called ``name`` (404 otherwise)."""
        found = self.workflows.get(name)
        if found is None:
            known = ", ".join(sorted(self.workflows)) or "none"
            raise ApiError(404, "WorkflowNotFound", f"no workflow {name!r} is served here (served: {known})")
        return found

    # --- endpoints ------------------------------------------------------------------------

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_document())

    async def list_workflows(self, request: Request) -> Response:
        return JSONResponse({"workflows": [describe_workflow(w) for w in self.workflows.values()]})

    async def start_run(self, request: Request) -> Response:
        plan = self.workflow(request.path_params["name"])
        wait = _wait_param(request)
        _, raw = await read_json(request, self.max_body)
        body = expect_object(raw, _RUN_FIELDS, "the body")
        run_id = _optional_str(body, "run_id") or uuid.uuid4().hex
        labels = _labels(body.get("labels"))
        key = _optional_str(body, "idempotency_key")
        started = await self.engine.start(
            plan, body.get("input"), run_id=run_id, idempotency_key=key, labels=labels
        )
        return await self._answer_started(started, created=started == run_id, wait=wait)

    async def _answer_started(self, run_id: str, *, created: bool, wait: float) -> Response:
        result = await self._settle(run_id, wait)
        return JSONResponse(run_json(result), status_code=201 if created else 200)

    async def _settle(self, run_id: str, wait: float) -> RunResult:
        """The run once it finished, or as it stands after ``wait`` seconds."""
        if wait > 0:
            with contextlib.suppress(TimeoutError):
                return await self.engine.wait_result(run_id, timeout=wait)
        return await self.engine.get(run_id)

    async def list_runs(self, request: Request) -> Response:
        query = request.query_params
        statuses = [s for value in query.getlist("status") for s in value.split(",") if s]
        known = {s.value for s in RunStatus}
        unknown = sorted(set(statuses) - known)
        if unknown:
            raise ApiError(400, "BadRequest", f"unknown status {unknown}; use one of {sorted(known)}")
        limit = _int_param(query.get("limit"), "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        offset = _decode_cursor(query.get("cursor"))
        labels = dict(_label_param(value) for value in query.getlist("label"))
        page = await self.engine.list(
            query.get("workflow") or None,
            statuses or None,
            limit=limit + 1,
            offset=offset,
            labels=labels or None,
        )
        more = len(page) > limit
        return JSONResponse(
            {
                "runs": [run_json(run) for run in page[:limit]],
                "next_cursor": _encode_cursor(offset + limit) if more else None,
            }
        )

    async def get_run(self, request: Request) -> Response:
        return JSONResponse(run_json(await self.engine.get(request.path_params["run_id"])))

    async def signal(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        _, payload = await read_json(request, self.max_body)
        await self.engine.signal(run_id, request.path_params["name"], payload)
        return JSONResponse(run_json(await self.engine.get(run_id)), status_code=202)

    async def cancel(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        _, raw = await read_json(request, self.max_body)
        body = expect_object(raw, _CANCEL_FIELDS, "the body")
        run = await self.engine.get(run_id)
        if run.status.finished:
            raise ApiError(
                409, "InvalidRunStateError", f"run {run_id} is {run.status.value}; nothing to cancel"
            )
        reason = _optional_str(body, "reason")
        compensate = body.get("compensate", False)
        if not isinstance(compensate, bool):
            raise ApiError(400, "BadRequest", f"compensate must be true or false, got {compensate!r}")
        return JSONResponse(run_json(await self.engine.cancel(run_id, reason, compensate=compensate)))

    async def resume(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        wait = _wait_param(request)
        run = await self.engine.get(run_id)
        if run.status not in _RESUMABLE:
            raise ApiError(
                409,
                "InvalidRunStateError",
                f"run {run_id} is {run.status.value}; only pending, suspended, failed and rolled back "
                "runs can be resumed",
            )
        return await self._in_background(run_id, self.engine.resume(run_id), wait)

    async def retry(self, request: Request) -> Response:
        run_id, step = request.path_params["run_id"], request.path_params["step"]
        wait = _wait_param(request)
        run = await self.engine.get(run_id)
        plan = self.workflows.get(run.workflow)
        if plan is not None:
            plan.index_of(step)  # UnknownStepError -> 404
        if run.status not in _RETRYABLE:
            raise ApiError(
                409,
                "InvalidRunStateError",
                f"run {run_id} is {run.status.value}; only failed or rolled back runs can retry a step",
            )
        return await self._in_background(run_id, self.engine.retry_step(run_id, step), wait)

    async def _in_background(self, run_id: str, job: Awaitable[RunResult], wait: float) -> Response:
        """Drive ``job`` beyond this request; answer once it ends or after ``wait`` seconds."""
        task: asyncio.Task[RunResult] = asyncio.ensure_future(job)
        self._background.add(task)
        task.add_done_callback(self._finished)
        if wait > 0:
            done, _ = await asyncio.wait({task}, timeout=wait)
            if task in done:
                return JSONResponse(run_json(task.result()))
        return JSONResponse(run_json(await self.engine.get(run_id)), status_code=202)

    def _finished(self, task: asyncio.Task[RunResult]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("background resume failed: %r", task.exception())

    async def hook(self, request: Request) -> Response:
        name = request.path_params["name"]
        hook = self.webhooks.get(name)
        if hook is None:
            raise ApiError(404, "WebhookNotFound", f"no webhook {name!r} is served here")
        body = await read_body(request, self.max_body)
        hook.verify(request.headers.get(hook.signature_header), body, self.engine.clock.now())
        payload = parse_json(body, request.headers.get("content-type", ""))
        try:
            key = hook.idempotency(body, request.headers)
        except Exception as exc:
            raise ApiError(
                400, "BadRequest", f"webhook {name!r} cannot derive this delivery's idempotency key: {exc!r}"
            ) from None
        run_id = uuid.uuid4().hex
        started = await self.engine.start(
            hook.workflow, payload, run_id=run_id, idempotency_key=key, labels={"flux.webhook": name}
        )
        return await self._answer_started(started, created=started == run_id, wait=0)


def describe_workflow(plan: Workflow[Any]) -> dict[str, Any]:
    """A served workflow as ``GET /api/workflows`` lists it."""
    return {
        "name": plan.name,
        "fingerprint": plan.fingerprint,
        "input": plan.codec.type_name,
        "steps": [spec.describe() for spec in plan.steps],
        "signals": sorted(plan.signals),
        "mermaid": plan.to_mermaid(),
    }


def guarded(endpoint: Endpoint) -> Endpoint:
    """``endpoint`` answering API errors and caller-caused flux errors as JSON errors."""

    async def call(request: Request) -> Response:
        try:
            return await endpoint(request)
        except ApiError as exc:
            return exc.response()
        except FluxError as exc:
            error = ApiError.from_flux(exc)
            if error is None:
                raise
            return error.response()

    return call


def _optional_str(body: Mapping[str, Any], field: str) -> str | None:
    value = body.get(field)
    if value is not None and (not isinstance(value, str) or not value):
        raise ApiError(400, "BadRequest", f"{field} must be a non-empty string, got {value!r}")
    return value


def _labels(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ApiError(400, "BadRequest", f"labels must be an object of strings to strings, got {value!r}")
    return value


def _label_param(value: str) -> tuple[str, str]:
    key, sep, text = value.partition(":")
    if not sep or not key:
        raise ApiError(400, "BadRequest", f"label={value!r}: filter labels as label=key:value")
    return key, text


def _int_param(raw: str | None, name: str, default: int, low: int, high: int) -> int:
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ApiError(400, "BadRequest", f"{name}={raw!r}: use a whole number from {low} to {high}")
    return value


def _wait_param(request: Request) -> float:
    raw = request.query_params.get("wait")
    if raw is None:
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and 0 <= value <= 3600):
        raise ApiError(400, "BadRequest", f"wait={raw!r}: use a number of seconds from 0 to 3600")
    return value


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, _, number = text.partition(":")
        if kind == "offset" and number.isdigit():
            return int(number)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise ApiError(
        400, "BadRequest", f"cursor={cursor!r} is not a cursor this API gave out; omit it to start over"
    )
