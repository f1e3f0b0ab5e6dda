"""Shared fixtures: ``storage`` runs a test once per backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from flux.storage import MemoryStorage, SQLiteStorage, Storage

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
