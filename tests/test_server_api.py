"""The REST API, served by uvicorn on a loopback port and driven with httpx.

Bad inputs tried: malformed JSON, a wrong content type, a body that is not an object, unknown
body fields, a non-string run id, labels that are not strings, bodies over max_body (by
Content-Length and by streaming), unknown workflows, runs, steps and paths, a bad status, limit,
cursor, label filter and wait, input of the wrong type, a duplicate run id, a signal no wait
takes, cancelling a finished run, resuming a running or completed run, retrying a run that did
not fail, and a missing or wrong token.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_support import serving

from flux import FluxEngine, StepContext, create_workflow
from flux.server import create_app
from flux.storage import SQLiteStorage


@dataclass
class Greeting:
    name: str


def hello(ctx: StepContext[Greeting]) -> str:
    ctx.log.info("greeting <%s>", ctx.input.name)
    ctx.data["greeted"] = ctx.input.name
    return f"hi {ctx.input.name}"


greet = create_workflow("greet").input(Greeting).step("hello", hello)
approval = (
    create_workflow("approval")
    .step("prepare", lambda ctx: "ready")
    .wait_for_signal("approve", signal="approved")
    .step("finish", lambda ctx: ctx.outputs["approve"])
)
FLAKY = {"broken": True}


def maybe_fail(ctx: StepContext[Any]) -> str:
    if FLAKY["broken"]:
        raise RuntimeError("downstream is down")
    return "fixed"


flaky = create_workflow("flaky").step("first", lambda ctx: 1).step("call", maybe_fail, retries=0)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, FluxEngine]]:
    FLAKY["broken"] = True
    engine = FluxEngine(storage=SQLiteStorage(tmp_path / "flux.db"), poll_interval=0.02)
    app = create_app(engine, workflows=[greet, approval, flaky], max_body=4096)
    async with serving(app) as client:
        yield client, engine


@pytest.fixture
def http(served: tuple[httpx.AsyncClient, FluxEngine]) -> httpx.AsyncClient:
    """A client of the served app."""
    return served[0]


@pytest.fixture
def engine(served: tuple[httpx.AsyncClient, FluxEngine]) -> FluxEngine:
    """The served app's engine (the test's process is the server's)."""
    return served[1]


async def waiting_run(engine: FluxEngine) -> str:
    """A run of ``approval`` suspended on its signal (``execute`` returns once it waits)."""
    result = await engine.execute(approval, None)
    assert result.status == "suspended"
    return result.id


async def start(http: httpx.AsyncClient, workflow: str, body: Any, query: str = "") -> httpx.Response:
    return await http.post(f"/api/workflows/{workflow}/runs{query}", json=body)


def assert_error(response: httpx.Response, status: int, type: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["message"]
    if type is not None:
        assert error["type"] == type
    return error


async def test_start_a_run_and_wait_for_its_end(http: httpx.AsyncClient) -> None:
    response = await start(http, "greet", {"input": {"name": "Ada"}, "labels": {"team": "core"}}, "?wait=10")
    assert response.status_code == 201
    run = response.json()
    assert run["status"] == "completed"
    assert run["workflow"] == "greet"
    assert run["labels"] == {"team": "core"}
    assert run["outputs"] == {"hello": "hi Ada"}
    assert run["data"] == {"greeted": "Ada"}
    assert run["created_at"] and run["finished_at"]
    [step] = run["steps"]
    assert step["step"] == "hello" and step["status"] == "completed" and step["attempts"] == 1
    assert step["started_at"] and step["finished_at"] and step["error"] is None
    fetched = await http.get(f"/api/runs/{run['id']}")
    assert fetched.status_code == 200
    assert fetched.json() == run


async def test_step_logs_are_in_the_api_and_on_the_dashboard(http: httpx.AsyncClient) -> None:
    run = (await start(http, "greet", {"input": {"name": "Ada"}}, "?wait=10")).json()
    [line] = run["steps"][0]["logs"]
    assert (line["level"], line["message"]) == ("info", "greeting <Ada>") and line["time"]
    page = (await http.get(f"/runs/{run['id']}")).text
    assert "<h2>Logs</h2><table id=run-logs>" in page
    assert "<td>hello #0</td>" in page and "<td>greeting &lt;Ada&gt;</td>" in page  # escaped
    waiting = (await start(http, "approval", {}, "?wait=10")).json()
    assert "run-logs" not in (await http.get(f"/runs/{waiting['id']}")).text  # nothing logged


async def test_start_without_wait_answers_at_once_and_a_worker_drives_the_run(
    http: httpx.AsyncClient,
) -> None:
    response = await start(http, "greet", {"input": {"name": "Bo"}, "run_id": "run-bo"})
    assert response.status_code == 201
    assert response.json()["id"] == "run-bo"
    assert response.json()["status"] in ("pending", "running", "completed")
    done = await http.post("/api/workflows/greet/runs?wait=10", json={"input": {"name": "x"}})
    assert done.json()["status"] == "completed"


async def test_idempotency_key_returns_the_existing_run_with_200(http: httpx.AsyncClient) -> None:
    body = {"input": {"name": "Cy"}, "idempotency_key": "order-7"}
    first = await start(http, "greet", body, "?wait=10")
    again = await start(http, "greet", body)
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    listed = (await http.get("/api/runs?workflow=greet")).json()["runs"]
    assert len(listed) == 1


async def test_list_runs_filters_and_pages_with_a_cursor(http: httpx.AsyncClient, engine: FluxEngine) -> None:
    for i in range(5):
        await start(
            http,
            "greet",
            {"input": {"name": f"n{i}"}, "labels": {"batch": "a" if i < 3 else "b"}},
            "?wait=10",
        )
    waiting = (await http.get(f"/api/runs/{await waiting_run(engine)}")).json()
    assert waiting["status"] == "suspended"

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        query = "/api/runs?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = (await http.get(query)).json()
        seen += [run["id"] for run in page["runs"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and len(seen) == 6 and len(set(seen)) == 6

    suspended = (await http.get("/api/runs?status=suspended")).json()["runs"]
    assert [run["id"] for run in suspended] == [waiting["id"]]
    both = (await http.get("/api/runs?status=suspended,completed")).json()["runs"]
    assert len(both) == 6
    batch_a = (await http.get("/api/runs", params={"label": "batch:a"})).json()["runs"]
    assert len(batch_a) == 3 and all(run["labels"] == {"batch": "a"} for run in batch_a)
    approvals = (await http.get("/api/runs?workflow=approval")).json()["runs"]
    assert [run["id"] for run in approvals] == [waiting["id"]]


async def test_signal_resumes_a_waiting_run(http: httpx.AsyncClient, engine: FluxEngine) -> None:
    run = (await http.get(f"/api/runs/{await waiting_run(engine)}")).json()
    assert run["status"] == "suspended"
    [*_, waiting] = run["steps"]
    assert waiting["step"] == "approve" and waiting["waiting_for"] == "approved"
    sent = await http.post(f"/api/runs/{run['id']}/signals/approved", json={"by": "ops"})
    assert sent.status_code == 202
    await engine.wait_result(run["id"], timeout=10)  # the app's worker resumes it
    finished = (await http.get(f"/api/runs/{run['id']}")).json()
    assert finished["status"] == "completed"
    assert finished["outputs"]["finish"] == {"by": "ops"}


async def test_cancel_a_waiting_run(http: httpx.AsyncClient, engine: FluxEngine) -> None:
    run = {"id": await waiting_run(engine)}
    cancelled = await http.post(f"/api/runs/{run['id']}/cancel", json={"reason": "not needed"})
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    again = await http.post(f"/api/runs/{run['id']}/cancel")
    assert_error(again, 409, "InvalidRunStateError")


async def test_retry_a_failed_step_and_resume(http: httpx.AsyncClient) -> None:
    failed = (await start(http, "flaky", {}, "?wait=10")).json()
    assert failed["status"] == "failed"
    assert failed["steps"][-1]["error"]["message"] == "downstream is down"
    assert_error(await http.post(f"/api/runs/{failed['id']}/retry/nope"), 404, "UnknownStepError")
    FLAKY["broken"] = False
    retried = await http.post(f"/api/runs/{failed['id']}/retry/call?wait=10")
    assert retried.status_code == 200, retried.text
    assert retried.json()["status"] == "completed"
    assert retried.json()["outputs"] == {"first": 1, "call": "fixed"}
    assert_error(await http.post(f"/api/runs/{failed['id']}/retry/call"), 409, "InvalidRunStateError")
    assert_error(await http.post(f"/api/runs/{failed['id']}/resume"), 409, "InvalidRunStateError")

    FLAKY["broken"] = True
    second = (await start(http, "flaky", {}, "?wait=10")).json()
    FLAKY["broken"] = False
    resumed = await http.post(f"/api/runs/{second['id']}/resume?wait=10")
    assert resumed.status_code == 200 and resumed.json()["status"] == "completed"


async def test_resume_in_the_background_answers_202(http: httpx.AsyncClient, engine: FluxEngine) -> None:
    run = {"id": await waiting_run(engine)}
    resumed = await http.post(f"/api/runs/{run['id']}/resume")
    assert resumed.status_code == 202
    assert resumed.json()["id"] == run["id"]


async def test_workflows_and_openapi(http: httpx.AsyncClient) -> None:
    listed = (await http.get("/api/workflows")).json()["workflows"]
    by_name = {w["name"]: w for w in listed}
    assert set(by_name) == {"greet", "approval", "flaky"}
    assert by_name["approval"]["signals"] == ["approved"]
    assert by_name["greet"]["input"] == "Greeting"
    assert by_name["greet"]["mermaid"].startswith("flowchart")
    assert len(by_name["greet"]["fingerprint"]) > 8
    spec = (await http.get("/api/openapi.json")).json()
    assert spec["openapi"].startswith("3.")
    for path in (
        "/api/workflows",
        "/api/workflows/{name}/runs",
        "/api/runs",
        "/api/runs/{run_id}",
        "/api/runs/{run_id}/signals/{name}",
        "/api/runs/{run_id}/cancel",
        "/api/runs/{run_id}/resume",
        "/api/runs/{run_id}/retry/{step}",
        "/hooks/{name}",
    ):
        assert path in spec["paths"]


@pytest.mark.parametrize(
    ("content", "headers", "type"),
    [
        (b"{not json", {"content-type": "application/json"}, "BadJSON"),
        (b'{"input": {}}', {"content-type": "text/plain"}, "BadContentType"),
        (b"[1, 2]", {"content-type": "application/json"}, "BadRequest"),
        (b'{"inputs": {}}', {"content-type": "application/json"}, "BadRequest"),
        (b'{"run_id": 5}', {"content-type": "application/json"}, "BadRequest"),
        (b'{"labels": {"a": 1}}', {"content-type": "application/json"}, "BadRequest"),
    ],
)
async def test_bad_bodies_are_400_and_store_nothing(
    http: httpx.AsyncClient, content: bytes, headers: dict[str, str], type: str
) -> None:
    response = await http.post("/api/workflows/greet/runs", content=content, headers=headers)
    assert_error(response, 400, type)
    assert (await http.get("/api/runs")).json()["runs"] == []


async def test_input_of_the_wrong_type_is_422(http: httpx.AsyncClient) -> None:
    error = assert_error(await start(http, "greet", {"input": {"nom": "x"}}), 422, "InvalidInputError")
    assert "Greeting" in error["message"]
    assert (await http.get("/api/runs")).json()["runs"] == []


async def test_bodies_over_the_limit_are_413(http: httpx.AsyncClient) -> None:
    big = {"input": {"name": "x" * 5000}}
    assert_error(await start(http, "greet", big), 413, "PayloadTooLarge")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit holds while streaming
        yield b'{"input": {"name": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}}'

    streamed = await http.post(
        "/api/workflows/greet/runs", content=chunks(), headers={"content-type": "application/json"}
    )
    assert_error(streamed, 413, "PayloadTooLarge")
    assert (await http.get("/api/runs")).json()["runs"] == []


async def test_unknown_things_are_404(http: httpx.AsyncClient) -> None:
    assert_error(await start(http, "nope", {}), 404, "WorkflowNotFound")
    assert_error(await http.get("/api/runs/missing"), 404, "RunNotFoundError")
    assert_error(await http.post("/api/runs/missing/cancel"), 404, "RunNotFoundError")
    assert_error(await http.post("/api/runs/missing/signals/x", json=1), 404, "RunNotFoundError")
    assert_error(await http.post("/api/runs/missing/resume"), 404, "RunNotFoundError")
    assert_error(await http.post("/api/runs/missing/retry/x"), 404, "RunNotFoundError")
    assert_error(await http.get("/api/nothing-here"), 404, "NotFound")
    assert_error(await http.post("/hooks/nope", json={}), 404, "WebhookNotFound")
    assert_error(await http.delete("/api/runs"), 405, "MethodNotAllowed")


async def test_conflicts_are_409(http: httpx.AsyncClient, engine: FluxEngine) -> None:
    await start(http, "greet", {"input": {"name": "a"}, "run_id": "taken"}, "?wait=10")
    assert_error(await start(http, "greet", {"input": {"name": "b"}, "run_id": "taken"}), 409)
    waiting = {"id": await waiting_run(engine)}
    error = assert_error(await http.post(f"/api/runs/{waiting['id']}/signals/wrong", json=1), 409)
    assert "approved" in error["message"]
    assert_error(await http.post("/api/runs/taken/signals/approved", json=1), 409, "InvalidRunStateError")


@pytest.mark.parametrize(
    "query",
    [
        "status=bogus",
        "limit=0",
        "limit=501",
        "limit=ten",
        "cursor=%%%",
        "cursor=b2Zmc2V0Oi0x",
        "label=nocolon",
    ],
)
async def test_bad_list_queries_are_400(http: httpx.AsyncClient, query: str) -> None:
    assert_error(await http.get(f"/api/runs?{query}"), 400, "BadRequest")


@pytest.mark.parametrize("wait", ["-1", "abc", "nan", "99999"])
async def test_bad_wait_is_400(http: httpx.AsyncClient, wait: str) -> None:
    assert_error(await start(http, "greet", {"input": {"name": "x"}}, f"?wait={wait}"), 400, "BadRequest")


async def test_token_guards_api_and_dashboard(tmp_path: Path) -> None:
    engine = FluxEngine(storage=SQLiteStorage(tmp_path / "flux.db"))
    app = create_app(engine, workflows=[greet], token="s3cret")
    async with serving(app) as http:
        assert_error(await http.get("/api/runs"), 401, "Unauthorized")
        assert_error(await http.get("/api/runs", headers={"authorization": "Bearer wrong"}), 401)
        assert_error(await http.get("/api/openapi.json", headers={"authorization": "Basic s3cret"}), 401)
        response = await http.post("/api/workflows/greet/runs", json={"input": {"name": "x"}})
        assert_error(response, 401)
        assert (await http.get("/api/runs")).status_code == 401
        ok = await http.get("/api/runs", headers={"authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()["runs"] == []

        page = await http.get("/")
        assert page.status_code == 401 and "API token" in page.text
        assert (await http.get("/static/flux.css")).status_code == 200  # the login page's style
        assert (await http.get("/loginx")).status_code == 401
        wrong = await http.post("/login", data={"token": "nope", "next": "/"})
        assert wrong.status_code == 401 and "flux_token" not in wrong.cookies
        login = await http.post("/login", data={"token": "s3cret", "next": "/workflows"})
        assert login.status_code == 303 and login.headers["location"] == "/workflows"
        assert (await http.get("/workflows")).status_code == 200  # the cookie now carries the token
        assert (await http.get("/api/runs")).status_code == 200
        for elsewhere in ("//evil.example", "/\\evil.example", "https://evil.example"):
            away = await http.post("/login", data={"token": "s3cret", "next": elsewhere})
            assert away.headers["location"] == "/"  # no open redirect


async def test_token_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLUX_API_TOKEN", "from-env")
    app = create_app(FluxEngine(storage=SQLiteStorage(tmp_path / "flux.db")), workflows=[greet])
    async with serving(app) as http:
        assert (await http.get("/api/runs")).status_code == 401
        ok = await http.get("/api/runs", headers={"authorization": "Bearer from-env"})
        assert ok.status_code == 200


async def test_without_a_token_everything_is_open(http: httpx.AsyncClient) -> None:
    assert (await http.get("/api/runs")).status_code == 200
    assert (await http.get("/")).status_code == 200


def test_create_app_refuses_bad_arguments() -> None:
    engine = FluxEngine()
    with pytest.raises(ValueError, match="max_body"):
        create_app(engine, max_body=0)
    with pytest.raises(TypeError, match="expected a Workflow or a builder"):
        create_app(engine, workflows=["greet"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="webhooks must be"):
        create_app(engine, webhooks=[greet])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="two workflows are named"):
        create_app(engine, workflows=[greet, create_workflow("greet").step("other", lambda ctx: 1)])
