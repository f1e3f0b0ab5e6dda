"""Signed webhooks: ``POST /hooks/{name}`` starts a run whose input is the JSON body.

The sender signs each delivery with a shared secret. The signature header reads
``t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">``; a missing or wrong signature,
or a timestamp further than ``tolerance`` seconds from now (a replay), is refused with 401.
A redelivery (same idempotency key, by default the SHA-256 of the raw body) starts no
second run: it is answered 200 with the run the first delivery started.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import attrs

from flux.builder import as_workflow
from flux.plan import Workflow
from flux.server._http import ApiError

IdempotencyKey = Callable[[bytes, Mapping[str, str]], str]
"""Derives a delivery's idempotency key from its raw body and its headers."""


def body_sha256(body: bytes, headers: Mapping[str, str]) -> str:
    """The default idempotency key: the hex SHA-256 of the raw body."""
    return hashlib.sha256(body).hexdigest()


def _as_secret(value: str | bytes) -> bytes:
    secret = value.encode() if isinstance(value, str) else value
    if not isinstance(secret, bytes) or not secret:
        raise ValueError("Webhook(secret=...) must be a non-empty str or bytes shared with the sender")
    return secret


def _check_tolerance(instance: Webhook, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise ValueError(f"webhook {instance.name!r}: tolerance must be a positive number of seconds")


def webhook_signature(secret: str | bytes, body: bytes, timestamp: int | None = None) -> str:
    """The signature header value a sender puts on ``body``: ``t=<unix>,v1=<hex>``.

    ``timestamp`` defaults to now (Unix seconds).

    >>> webhook_signature("s3cret", b"{}", timestamp=1700000000)[:13]
    't=1700000000,'
    """
    stamp = int(time.time()) if timestamp is None else int(timestamp)
    digest = hmac.new(_as_secret(secret), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={digest}"


@attrs.frozen
class Webhook:
    """A signed HTTP trigger for a workflow, mounted at ``POST /hooks/{name}``.

    Args:
        name: the path segment (``/hooks/{name}``).
        workflow: the workflow (or builder) a delivery starts; the JSON body is its input.
        secret: the secret shared with the sender (str or bytes).
        signature_header: the header carrying ``t=<unix>,v1=<hex>``.
        tolerance: seconds a signature's timestamp may be away from now before the delivery
            is refused as a replay.
        idempotency: ``fn(raw_body, headers) -> str``, the key that makes redeliveries start
            no second run; default the SHA-256 of the raw body.

    >>> from flux import create_workflow
    >>> flow = create_workflow("on-order").step("store", lambda ctx: None)
    >>> Webhook("orders", flow, secret="s3cret").signature_header
    'X-Flux-Signature'
    """

    name: str
    workflow: Workflow[Any] = attrs.field(converter=as_workflow)
    secret: bytes = attrs.field(kw_only=True, converter=_as_secret, repr=False)
    signature_header: str = attrs.field(default="X-Flux-Signature", kw_only=True)
    tolerance: float = attrs.field(default=300.0, kw_only=True, validator=_check_tolerance)
    idempotency: IdempotencyKey = attrs.field(default=body_sha256, kw_only=True)

    def verify(self, header: str | None, body: bytes, now: datetime) -> None:
        """Check a delivery's signature header against ``body`` at time ``now``.

        Raises:
            ApiError: 401 for a missing, malformed or wrong signature, or a timestamp more
                than ``tolerance`` seconds from ``now``.
        """
        if not header:
            raise _unauthorized(f"missing signature header {self.signature_header}")
        stamp, signatures = _parse(header)
        if stamp is None or not signatures:
            raise _unauthorized(
                f"malformed {self.signature_header} header; expected 't=<unix seconds>,v1=<hex hmac>'"
            )
        if abs(now.timestamp() - stamp) > self.tolerance:
            raise _unauthorized(
                f"signature timestamp {stamp} is more than {self.tolerance:g}s from now; "
                "sign each delivery when sending it (old deliveries are refused as replays)"
            )
        expected = webhook_signature(self.secret, body, stamp).split(",v1=", 1)[1]
        if not any(hmac.compare_digest(expected, given) for given in signatures):
            raise _unauthorized("signature does not match the body; check the shared secret")


def _parse(header: str) -> tuple[int | None, list[str]]:
    stamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit():
            stamp = int(value)
        elif key == "v1" and value:
            signatures.append(value)
    return stamp, signatures


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "InvalidSignature", message)
