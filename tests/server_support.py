"""Serve an ASGI app with uvicorn on a free loopback port, inside the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator

import httpx
import uvicorn
from starlette.applications import Starlette


def bound_socket() -> socket.socket:
    """A listening TCP socket on a free loopback port: clients can connect before the server
    accepts (they queue in the backlog), so nobody waits for the server to come up."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(256)
    return sock


@contextlib.asynccontextmanager
async def serving(app: Starlette, **client: object) -> AsyncIterator[httpx.AsyncClient]:
    """Serve ``app`` with uvicorn (lifespan on) and yield an httpx client for it."""
    sock = bound_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30, **client) as http:  # type: ignore[arg-type]
            yield http
    finally:
        server.should_exit = True
        await task
        sock.close()


@contextlib.contextmanager
def free_port() -> Iterator[int]:
    """A loopback port free at the time of the call."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]
