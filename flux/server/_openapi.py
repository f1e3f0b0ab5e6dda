"""The OpenAPI 3.1 document served at ``/api/openapi.json``."""

from __future__ import annotations

from typing import Any

_ERROR = {"$ref": "#/components/responses/Error"}
_RUN = {
    "description": "The run",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Run"}}},
}


def _path_param(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


_RUN_ID = _path_param("run_id", "The run id")
_WAIT = _query("wait", "Seconds to wait for the run to end before answering", {"type": "number"})


def _errors(*codes: int) -> dict[str, Any]:
    return {str(code): _ERROR for code in codes}


def _operation(summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"summary": summary, "responses": {**responses, **_errors(401)}, **extra}


def openapi_document() -> dict[str, Any]:
    """The API's OpenAPI description (a new dict each call)."""
    json_body = {"content": {"application/json": {"schema": {}}}, "required": False}
    return {
        "openapi": "3.1.0",
        "info": {"title": "flux", "version": "1", "description": "Start, inspect and control flux runs."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {
                "Error": {
                    "description": "An error",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                }
            },
            "schemas": _schemas(),
        },
        "security": [{"bearer": []}],
        "paths": {
            "/api/workflows": {
                "get": _operation(
                    "List the served workflows (names, fingerprints, Mermaid)",
                    {
                        "200": {
                            "description": "The workflows",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                )
            },
            "/api/workflows/{name}/runs": {
                "post": _operation(
                    "Start a run",
                    {"201": _RUN, "200": _RUN, **_errors(400, 404, 409, 413, 422)},
                    parameters=[_path_param("name", "The workflow's name"), _WAIT],
                    requestBody={
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/StartRun"}}}
                    },
                )
            },
            "/api/runs": {
                "get": _operation(
                    "List runs, newest first",
                    {
                        "200": {
                            "description": "A page of runs",
                            "content": {
                                "application/json": {"schema": {"$ref": "#/components/schemas/RunPage"}}
                            },
                        },
                        **_errors(400),
                    },
                    parameters=[
                        _query("status", "Run statuses, comma separated or repeated", {"type": "string"}),
                        _query("workflow", "A workflow name", {"type": "string"}),
                        _query("label", "key:value, repeated for several", {"type": "string"}),
                        _query("limit", "Page size (1-500, default 50)", {"type": "integer"}),
                        _query("cursor", "next_cursor of the previous page", {"type": "string"}),
                    ],
                )
            },
            "/api/runs/{run_id}": {
                "get": _operation("A run", {"200": _RUN, **_errors(404)}, parameters=[_RUN_ID])
            },
            "/api/runs/{run_id}/signals/{name}": {
                "post": _operation(
                    "Send a signal; the body is its payload",
                    {"202": _RUN, **_errors(400, 404, 409, 413)},
                    parameters=[_RUN_ID, _path_param("name", "The signal's name")],
                    requestBody=json_body,
                )
            },
            "/api/runs/{run_id}/cancel": {
                "post": _operation(
                    "Cancel a run (body: optional reason, compensate)",
                    {"200": _RUN, **_errors(400, 404, 409, 413)},
                    parameters=[_RUN_ID],
                    requestBody=json_body,
                )
            },
            "/api/runs/{run_id}/resume": {
                "post": _operation(
                    "Resume a stopped run",
                    {"200": _RUN, "202": _RUN, **_errors(404, 409)},
                    parameters=[_RUN_ID, _WAIT],
                )
            },
            "/api/runs/{run_id}/retry/{step}": {
                "post": _operation(
                    "Continue a failed run from a step",
                    {"200": _RUN, "202": _RUN, **_errors(404, 409)},
                    parameters=[_RUN_ID, _path_param("step", "The step to continue from"), _WAIT],
                )
            },
            "/hooks/{name}": {
                "post": {
                    "summary": "Signed webhook: start a run with the JSON body as input",
                    "security": [],
                    "parameters": [
                        _path_param("name", "The webhook's name"),
                        {
                            "name": "X-Flux-Signature",
                            "in": "header",
                            "required": True,
                            "description": "t=<unix>,v1=<hex HMAC-SHA256 of '<t>.<raw body>'>",
                            "schema": {"type": "string"},
                        },
                    ],
                    "requestBody": json_body,
                    "responses": {"201": _RUN, "200": _RUN, **_errors(400, 401, 404, 413, 422)},
                }
            },
        },
    }


def _schemas() -> dict[str, Any]:
    error_info = {
        "type": ["object", "null"],
        "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
    }
    step = {
        "type": "object",
        "properties": {
            "seq": {"type": "integer"},
            "step": {"type": "string"},
            "status": {"type": "string"},
            "attempts": {"type": "integer"},
            "started_at": {"type": ["string", "null"], "format": "date-time"},
            "finished_at": {"type": ["string", "null"], "format": "date-time"},
            "wake_at": {"type": ["string", "null"], "format": "date-time"},
            "waiting_for": {"type": ["string", "null"]},
            "error": error_info,
            "output": {},
            "logs": {
                "type": "array",
                "description": "The lines the step's handler logged with ctx.log.",
                "items": {
                    "type": "object",
                    "properties": {
                        "level": {"type": "string"},
                        "time": {"type": "string", "format": "date-time"},
                        "message": {"type": "string"},
                    },
                },
            },
        },
    }
    return {
        "Error": {
            "type": "object",
            "properties": {
                "error": {
                    "type": "object",
                    "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
                }
            },
        },
        "Run": {
            "type": "object",
            "required": ["id", "workflow", "status", "labels", "created_at", "steps", "data", "outputs"],
            "properties": {
                "id": {"type": "string"},
                "workflow": {"type": "string"},
                "status": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "created_at": {"type": "string", "format": "date-time"},
                "finished_at": {"type": ["string", "null"], "format": "date-time"},
                "input": {},
                "error": error_info,
                "steps": {"type": "array", "items": step},
                "data": {"type": "object"},
                "outputs": {"type": "object"},
            },
        },
        "RunPage": {
            "type": "object",
            "properties": {
                "runs": {"type": "array", "items": {"$ref": "#/components/schemas/Run"}},
                "next_cursor": {"type": ["string", "null"]},
            },
        },
        "StartRun": {
            "type": "object",
            "properties": {
                "input": {},
                "run_id": {"type": "string"},
                "idempotency_key": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
    }
