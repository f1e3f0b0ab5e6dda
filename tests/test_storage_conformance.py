"""The storage conformance suite, run on every backend by the parametrized ``storage`` fixture."""

from __future__ import annotations

from flux.testing import StorageConformance


class TestStorageConformance(StorageConformance):
    """MemoryStorage and SQLiteStorage against the contract (the fixture is in conftest.py)."""
