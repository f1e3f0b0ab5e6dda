"""Storage backends (:class:`MemoryStorage`, :class:`SQLiteStorage`, :class:`PostgresStorage`),
their protocol and :func:`from_url`; :func:`export_run` / :func:`import_run` move a run between
databases."""

from flux.storage._transfer import export_run, import_run
from flux.storage._url import DEFAULT_URL, from_url
from flux.storage.memory import MemoryStorage
from flux.storage.postgres import PostgresStorage
from flux.storage.protocol import Storage
from flux.storage.sqlite import SQLiteStorage

__all__ = [
    "DEFAULT_URL",
    "MemoryStorage",
    "PostgresStorage",
    "SQLiteStorage",
    "Storage",
    "export_run",
    "from_url",
    "import_run",
]
