"""Shared fixtures: ``storage`` runs a test once per backend (PostgreSQL: see postgres_support)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from postgres_support import drop_schema, new_schema, postgres_dsn

from flux import FluxEngine
from flux.storage import MemoryStorage, PostgresStorage, SQLiteStorage, Storage
from flux.testing import FakeClock

pytest_plugins = ["pytester"]  # tests of the flux pytest plugin run pytest in pytest

BACKENDS = ["memory", "sqlite", "postgres"]


@pytest.fixture(params=BACKENDS)
async def reopen(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Callable[[], Storage]]:
    """Opens the same store again on each call: the way another (or a restarted) process sees it.

    MemoryStorage (one shared object), SQLiteStorage on a temporary file, PostgresStorage in a
    schema of its own (dropped afterwards).
    """
    if request.param == "sqlite":
        yield lambda: SQLiteStorage(tmp_path / "flux.db")
    elif request.param == "postgres":
        dsn, schema = postgres_dsn(), new_schema()
        yield lambda: PostgresStorage(dsn, schema=schema, min_size=1, max_size=4)
        await drop_schema(dsn, schema)
    else:
        shared = MemoryStorage()
        yield lambda: shared


@pytest.fixture
async def storage(reopen: Callable[[], Storage]) -> AsyncIterator[Storage]:
    """An opened storage backend, once per backend (see ``reopen``)."""
    store = reopen()
    await store.init()
    yield store
    await store.close()


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock starting in 2030 that moves only when told to."""
    return FakeClock()


@pytest.fixture
async def engine(reopen: Callable[[], Storage], clock: FakeClock) -> AsyncIterator[FluxEngine]:
    """An engine on a ``reopen`` store and the fake ``clock``."""
    async with FluxEngine(storage=reopen(), clock=clock) as engine:
        yield engine
