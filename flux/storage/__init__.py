"""Storage backends (:class:`MemoryStorage`, :class:`SQLiteStorage`) and their protocol."""

from flux.storage.memory import MemoryStorage
from flux.storage.protocol import Storage
from flux.storage.sqlite import SQLiteStorage

__all__ = ["MemoryStorage", "SQLiteStorage", "Storage"]
