"""The storage conformance suite, run on every backend by the parametrized ``storage`` fixture."""

from __future__ import annotations

import sqlite3

import asyncpg

from flux.storage import PostgresStorage, SQLiteStorage, Storage
from flux.testing import StorageConformance


class TestStorageConformance(StorageConformance):
    """Every backend against the contract (the fixture is in conftest.py)."""

    async def damage(self, storage: Storage, run_id: str) -> bool:
        """SQLite and PostgreSQL: write broken JSON into the run's ``error`` column, outside
        flux. MemoryStorage keeps objects, not encoded rows: nothing to damage."""
        if isinstance(storage, PostgresStorage):
            conn = await asyncpg.connect(storage.dsn)
            try:
                table = f'"{storage.schema}"."{storage.table_prefix}runs"'
                await conn.execute(f"UPDATE {table} SET error = '{{broken' WHERE id = $1", run_id)
            finally:
                await conn.close()
            return True
        if not isinstance(storage, SQLiteStorage):
            return False
        with sqlite3.connect(storage.path) as conn:
            conn.execute("UPDATE flux_runs SET error = '{broken' WHERE id = ?", (run_id,))
        conn.close()
        return True
