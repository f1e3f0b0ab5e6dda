"""Storage backends (:class:`MemoryStorage`, :class:`SQLiteStorage`) and their protocol."""

from flux.storage.memory import MemoryStorage
from flux.storage.protocol import Storage

__all__ = ["MemoryStorage", "Storage"]
