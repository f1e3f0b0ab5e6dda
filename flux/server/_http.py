"""JSON in and out: request bodies with a size limit, errors as ``{"error": {...}}``, runs as JSON."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from flux.errors import (
    FluxError,
    InvalidInputError,
    InvalidRunStateError,
    PlanMismatchError,
    RunNotFoundError,
    SerializationError,
    UnknownSignalError,
    UnknownStepError,
    WorkflowNotRegisteredError,
)
from flux.records import ErrorInfo, StepRecord
from flux.result import RunResult

# Most specific first: the first class an error is an instance of decides its status.
_STATUS: tuple[tuple[type[Exception], int], ...] = (
    (InvalidInputError, 422),
    (RunNotFoundError, 404),
    (UnknownStepError, 404),
    (InvalidRunStateError, 409),
    (UnknownSignalError, 409),
    (PlanMismatchError, 409),
    (WorkflowNotRegisteredError, 409),
    (SerializationError, 400),
)


class ApiError(Exception):
    """An error answered as ``{"error": {"type", "message"}}`` with an HTTP status."""

    def __init__(self, status: int, type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.message = message

    @classmethod
    def from_flux(cls, exc: FluxError) -> ApiError | None:
        """The API error for a flux error a caller caused, or None for an internal one."""
        for kind, status in _STATUS:
            if isinstance(exc, kind):
                return cls(status, type(exc).__name__, str(exc))
        return None

    def response(self) -> JSONResponse:
        """The JSON response."""
        return error_response(self.status, self.type, self.message)


def error_response(status: int, type: str, message: str) -> JSONResponse:
    """``{"error": {"type": type, "message": message}}`` with ``status``."""
    return JSONResponse({"error": {"type": type, "message": message}}, status_code=status)


async def read_body(request: Request, max_body: int) -> bytes:
    """The raw body, refusing (413) one over ``max_body`` bytes before reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_body:
        raise _too_large(max_body)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_body:
            raise _too_large(max_body)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(max_body: int) -> ApiError:
    return ApiError(
        413, "PayloadTooLarge", f"the request body is larger than {max_body} bytes; send less data"
    )


async def read_json(request: Request, max_body: int) -> tuple[bool, Any]:
    """``(present, value)`` of a JSON body; an empty body is ``(False, None)``.

    Raises:
        ApiError: 413 over the limit; 400 for a wrong content type or malformed JSON.
    """
    body = await read_body(request, max_body)
    if not body.strip():
        return False, None
    return True, parse_json(body, request.headers.get("content-type", ""))


def parse_json(body: bytes, content_type: str) -> Any:
    """Decode a JSON body sent with ``content_type`` (400 when it is not JSON)."""
    media = content_type.split(";")[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise ApiError(
            400,
            "BadContentType",
            f"the body must be JSON sent with 'Content-Type: application/json', got {content_type!r}",
        )
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, "BadJSON", f"the body is not valid JSON: {exc}") from None


def expect_object(value: Any, allowed: frozenset[str], what: str) -> Mapping[str, Any]:
    """``value`` as a JSON object whose keys are all in ``allowed`` (400 otherwise)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ApiError(400, "BadRequest", f"{what} must be a JSON object, got {type(value).__name__}")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ApiError(
            400,
            "BadRequest",
            f"{what} has unknown fields {unknown}; allowed: {sorted(allowed)}",
        )
    return value


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def error_json(error: ErrorInfo | None) -> dict[str, Any] | None:
    """A recorded error as JSON (None stays None)."""
    return error.to_json() if error is not None else None


def step_json(record: StepRecord) -> dict[str, Any]:
    """One step visit as JSON."""
    return {
        "seq": record.seq,
        "step": record.step,
        "status": record.status.value,
        "attempts": record.attempts,
        "started_at": _time(record.started_at),
        "finished_at": _time(record.finished_at),
        "duration": record.duration,
        "wake_at": _time(record.wake_at),
        "waiting_for": record.waiting_for,
        "error": error_json(record.error),
        "output": record.output,
        "logs": [line.to_json() for line in record.logs],
    }


def run_json(result: RunResult) -> dict[str, Any]:
    """A run as the API returns it: header, step timeline, data and outputs."""
    return {
        "id": result.id,
        "workflow": result.workflow,
        "status": result.status.value,
        "labels": dict(result.labels),
        "created_at": _time(result.created_at),
        "finished_at": _time(result.finished_at),
        "duration": result.duration,
        "input": result.input,
        "error": error_json(result.error),
        "steps": [step_json(record) for record in result.history],
        "data": result.data,
        "outputs": result.outputs,
    }
