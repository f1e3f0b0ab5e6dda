"""Shared fixtures: ``storage`` runs a test once per backend."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from flux import FluxEngine
from flux.storage import MemoryStorage, SQLiteStorage, Storage
from flux.testing import FakeClock

pytest_plugins = ["pytester"]  # tests of the flux pytest plugin run pytest in pytest

BACKENDS = ["memory", "sqlite"]


def make_storage(kind: str, tmp_path: Path) -> Storage:
    """A fresh, unopened backend of ``kind`` (SQLite on a file under ``tmp_path``)."""
    if kind == "memory":
        return MemoryStorage()
    if kind == "sqlite":
        return SQLiteStorage(tmp_path / "flux.db")
    raise ValueError(f"unknown storage backend {kind!r}; use one of {BACKENDS}")


@pytest.fixture(params=BACKENDS)
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    """An opened storage backend: MemoryStorage, then SQLiteStorage on a temporary file."""
    store = make_storage(request.param, tmp_path)
    await store.init()
    yield store
    await store.close()


@pytest.fixture(params=BACKENDS)
def reopen(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Storage]:
    """Opens the same store again on each call: the way another (or a restarted) process sees it."""
    if request.param == "sqlite":
        return lambda: SQLiteStorage(tmp_path / "flux.db")
    shared = MemoryStorage()
    return lambda: shared


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock starting in 2030 that moves only when told to."""
    return FakeClock()


@pytest.fixture
async def engine(reopen: Callable[[], Storage], clock: FakeClock) -> AsyncIterator[FluxEngine]:
    """An engine on a ``reopen`` store and the fake ``clock``."""
    async with FluxEngine(storage=reopen(), clock=clock) as engine:
        yield engine
