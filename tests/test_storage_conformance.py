"""The storage conformance suite, run on every backend by the parametrized ``storage`` fixture."""

from __future__ import annotations

import sqlite3

from flux.storage import SQLiteStorage, Storage
from flux.testing import StorageConformance


class TestStorageConformance(StorageConformance):
    """MemoryStorage and SQLiteStorage against the contract (the fixture is in conftest.py)."""

    async def damage(self, storage: Storage, run_id: str) -> bool:
        """SQLite: write broken JSON into the run's ``error`` column, outside flux.
        MemoryStorage keeps objects, not encoded rows: nothing to damage."""
        if not isinstance(storage, SQLiteStorage):
            return False
        with sqlite3.connect(storage.path) as conn:
            conn.execute("UPDATE flux_runs SET error = '{broken' WHERE id = ?", (run_id,))
        conn.close()
        return True
