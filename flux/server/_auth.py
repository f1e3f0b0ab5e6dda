"""Bearer-token auth for the API and the dashboard, compared in constant time.

A request carries the token as ``Authorization: Bearer <token>`` or, from the dashboard, in
the ``flux_token`` cookie it set after asking once. Webhooks are exempt: their signature is
their proof. The login page is exempt, or nobody could log in.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from http.cookies import SimpleCookie

from starlette.types import ASGIApp, Receive, Scope, Send

COOKIE = "flux_token"
_OPEN_PREFIXES = ("/hooks/", "/static/")  # webhooks prove themselves; the login page needs its style
_OPEN_PATHS = frozenset({"/login"})


def token_matches(given: str | None, token: str) -> bool:
    """Whether ``given`` is ``token``, compared in constant time."""
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def request_token(headers: dict[str, str]) -> str | None:
    """The bearer token of a request: its Authorization header, else the dashboard's cookie."""
    auth = headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    cookie = SimpleCookie()
    try:
        cookie.load(headers.get("cookie", ""))
    except Exception:
        return None
    morsel = cookie.get(COOKIE)
    return morsel.value if morsel is not None else None


class TokenAuth:
    """ASGI middleware refusing requests without the token with 401: a JSON error under
    ``/api``, the dashboard's login form (``login_page(path)``) elsewhere."""

    def __init__(self, app: ASGIApp, token: str, login_page: Callable[[str], str]) -> None:
        self.app = app
        self.token = token
        self.login_page = login_page

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or path in _OPEN_PATHS or path.startswith(_OPEN_PREFIXES):
            await self.app(scope, receive, send)
            return
        received = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if token_matches(request_token(received), self.token):
            await self.app(scope, receive, send)
            return
        if path.startswith("/api"):
            body = json.dumps(
                {
                    "error": {
                        "type": "Unauthorized",
                        "message": "send the API token as 'Authorization: Bearer <token>'",
                    }
                }
            ).encode()
            kind = b"application/json"
        else:
            body, kind = self.login_page(path).encode(), b"text/html; charset=utf-8"
        await _send(send, 401, body, [(b"content-type", kind), (b"www-authenticate", b'Bearer realm="flux"')])


async def _send(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
