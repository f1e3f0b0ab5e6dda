"""The PostgreSQL server the tests use, and a fresh schema per test.

Tests read the server from ``FLUX_TEST_POSTGRES_DSN`` (``.ci/run`` sets it). Without it they
are skipped, except under CI (``CI=true``), where a missing server is a failure.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from flux.storage import PostgresStorage


def postgres_dsn() -> str:
    """The test server's DSN; skips the test when none is configured (fails under CI)."""
    dsn = os.environ.get("FLUX_TEST_POSTGRES_DSN")
    if not dsn:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true but FLUX_TEST_POSTGRES_DSN is not set: the PostgreSQL tests must run")
        pytest.skip("set FLUX_TEST_POSTGRES_DSN=postgresql://postgres@127.0.0.1:5432/test to run")
    return dsn


def new_schema() -> str:
    """A schema name no other test uses."""
    return f"flux_test_{uuid.uuid4().hex[:12]}"


async def drop_schema(dsn: str, schema: str) -> None:
    """Drop ``schema`` and everything in it."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def schema_storage(**options: object) -> AsyncIterator[PostgresStorage]:
    """An opened PostgresStorage in a schema of its own, dropped afterwards (for fixtures)."""
    dsn = postgres_dsn()
    schema = new_schema()
    store = PostgresStorage(dsn, schema=schema, min_size=1, max_size=4, **options)  # type: ignore[arg-type]
    await store.init()
    try:
        yield store
    finally:
        await store.close()
        await drop_schema(dsn, schema)
