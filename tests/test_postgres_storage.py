"""PostgresStorage against the storage contract, and what is its own: schema, errors, faults."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from postgres_support import schema_storage

from flux.storage import PostgresStorage
from flux.testing import StorageConformance


class TestPostgresConformance(StorageConformance):
    """The conformance suite, unchanged, on a fresh schema of the test server."""

    @pytest.fixture
    async def storage(self) -> AsyncIterator[PostgresStorage]:
        async for store in schema_storage():
            yield store
