"""Storage backends (:class:`MemoryStorage`, :class:`SQLiteStorage`, :class:`PostgresStorage`),
their protocol, and :func:`from_url`."""

from flux.storage._url import from_url
from flux.storage.memory import MemoryStorage
from flux.storage.postgres import PostgresStorage
from flux.storage.protocol import Storage
from flux.storage.sqlite import SQLiteStorage

__all__ = ["MemoryStorage", "PostgresStorage", "SQLiteStorage", "Storage", "from_url"]
