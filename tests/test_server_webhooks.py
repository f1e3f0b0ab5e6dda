"""Signed webhooks over real HTTP: good, bad, missing and replayed signatures, and redelivery.

Bad inputs tried: no signature header, a malformed header, a signature made with the wrong
secret, a signature over a different body, a timestamp older (and newer) than the tolerance,
a body that is not JSON, a wrong content type, a body over max_body, input of the wrong type,
and bad Webhook arguments.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from server_support import serving

from flux import FluxEngine, StepContext, create_workflow
from flux.server import Webhook, create_app, webhook_signature
from flux.storage import SQLiteStorage

SECRET = "whsec-test"


def store(ctx: StepContext[dict[str, object]]) -> object:
    return ctx.input["order"]


orders = create_workflow("orders").step("store", store)


@dataclass
class Order:
    order: int


typed = create_workflow("typed-orders").input(Order).step("store", lambda ctx: ctx.input.order)


def by_delivery_id(body: bytes, headers: Mapping[str, str]) -> str:
    return headers["x-delivery-id"]


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    engine = FluxEngine(storage=SQLiteStorage(tmp_path / "flux.db"), poll_interval=0.02)
    hooks = [
        Webhook("orders", orders, secret=SECRET),
        Webhook("typed", typed, secret=SECRET),
        Webhook("custom", orders, secret=b"other", signature_header="X-Sig", idempotency=by_delivery_id),
    ]
    async with serving(create_app(engine, webhooks=hooks, token="api-token", max_body=2048)) as client:
        yield client


async def deliver(
    http: httpx.AsyncClient,
    body: bytes,
    *,
    path: str = "/hooks/orders",
    secret: str | bytes = SECRET,
    stamp: int | None = None,
    header: str = "X-Flux-Signature",
    extra: Mapping[str, str] | None = None,
) -> httpx.Response:
    headers = {
        "content-type": "application/json",
        header: webhook_signature(secret, body, stamp),
        **(extra or {}),
    }
    return await http.post(path, content=body, headers=headers)


async def runs(http: httpx.AsyncClient) -> list[dict[str, object]]:
    page = await http.get("/api/runs", headers={"authorization": "Bearer api-token"})
    result: list[dict[str, object]] = page.json()["runs"]
    return result


async def test_a_signed_delivery_starts_a_run_with_the_body_as_input(http: httpx.AsyncClient) -> None:
    body = json.dumps({"order": 42}).encode()
    response = await deliver(http, body)  # no bearer token: the signature is the proof
    assert response.status_code == 201, response.text
    run = response.json()
    assert run["workflow"] == "orders"
    assert run["input"] == {"order": 42}
    assert run["labels"] == {"flux.webhook": "orders"}
    assert [r["id"] for r in await runs(http)] == [run["id"]]


async def test_redelivery_starts_no_second_run(http: httpx.AsyncClient) -> None:
    body = b'{"order": 7}'
    first = await deliver(http, body)
    again = await deliver(http, body)  # signed again, a moment later: same body, same key
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    other = await deliver(http, b'{"order": 8}')
    assert other.status_code == 201
    assert len(await runs(http)) == 2


async def test_custom_header_secret_and_idempotency_key(http: httpx.AsyncClient) -> None:
    sign = {"path": "/hooks/custom", "secret": b"other", "header": "X-Sig"}
    first = await deliver(http, b'{"order": 1}', extra={"x-delivery-id": "d-1"}, **sign)  # type: ignore[arg-type]
    same_id = await deliver(http, b'{"order": 2}', extra={"x-delivery-id": "d-1"}, **sign)  # type: ignore[arg-type]
    new_id = await deliver(http, b'{"order": 1}', extra={"x-delivery-id": "d-2"}, **sign)  # type: ignore[arg-type]
    assert (first.status_code, same_id.status_code, new_id.status_code) == (201, 200, 201)
    assert same_id.json()["id"] == first.json()["id"] != new_id.json()["id"]
    default_header = await deliver(http, b'{"order": 3}', path="/hooks/custom", secret=b"other")
    assert default_header.status_code == 401
    no_id = await deliver(http, b'{"order": 4}', **sign)  # type: ignore[arg-type]
    assert no_id.status_code == 400 and "idempotency key" in no_id.json()["error"]["message"]


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "missing signature"),
        ("garbage", "malformed"),
        ("t=abc,v1=00", "malformed"),
        ("t={now}", "malformed"),
        (("wrong-secret", b'{"order": 1}'), "does not match"),  # signed when the test runs
        ((SECRET, b'{"order": 2}'), "does not match"),  # another body
    ],
)
async def test_bad_signatures_are_401_and_store_nothing(
    http: httpx.AsyncClient, header: str | tuple[str, bytes] | None, message: str
) -> None:
    headers = {"content-type": "application/json"}
    if isinstance(header, tuple):
        headers["X-Flux-Signature"] = webhook_signature(*header)
    elif header is not None:
        headers["X-Flux-Signature"] = header.format(now=int(time.time()))
    response = await http.post("/hooks/orders", content=b'{"order": 1}', headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "InvalidSignature"
    assert message in response.json()["error"]["message"]
    assert await runs(http) == []


@pytest.mark.parametrize("age", [302, 3600, -305])  # a whole second of slack: t is rounded down
async def test_replayed_deliveries_outside_the_tolerance_are_401(http: httpx.AsyncClient, age: int) -> None:
    body = b'{"order": 1}'
    response = await deliver(http, body, stamp=int(time.time()) - age)
    assert response.status_code == 401
    assert "replay" in response.json()["error"]["message"]
    assert await runs(http) == []


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"{oops", "application/json", 400),
        (b'{"order": 1}', "text/plain", 400),
        (b'{"order": "' + b"x" * 3000 + b'"}', "application/json", 413),
    ],
)
async def test_bad_bodies(http: httpx.AsyncClient, body: bytes, content_type: str, status: int) -> None:
    headers = {"content-type": content_type, "X-Flux-Signature": webhook_signature(SECRET, body)}
    response = await http.post("/hooks/orders", content=body, headers=headers)
    assert response.status_code == status
    assert await runs(http) == []


def test_webhook_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="secret"):
        Webhook("x", orders, secret="")
    with pytest.raises(ValueError, match="tolerance"):
        Webhook("x", orders, secret="s", tolerance=0)
    with pytest.raises(TypeError, match="Workflow"):
        Webhook("x", "orders", secret="s")  # type: ignore[arg-type]


def test_signature_format() -> None:
    header = webhook_signature("key", b"{}", timestamp=1700000000)
    assert header == "t=1700000000,v1=" + hmac.new(b"key", b"1700000000.{}", hashlib.sha256).hexdigest()


async def test_input_of_the_wrong_type_is_422(http: httpx.AsyncClient) -> None:
    response = await deliver(http, b'{"sku": 1}', path="/hooks/typed")
    assert response.status_code == 422
    assert "Order" in response.json()["error"]["message"]
    assert await runs(http) == []
