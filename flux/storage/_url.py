"""One URL names a database everywhere: ``flux.storage.from_url``."""

from __future__ import annotations

import urllib.parse

from flux.storage.postgres import PostgresStorage
from flux.storage.protocol import Storage
from flux.storage.sqlite import SQLiteStorage

_POSTGRES = ("postgresql", "postgres")


def from_url(url: str) -> Storage:
    """The storage backend a URL names (not opened yet).

    ``sqlite:///path/flux.db`` (or a bare path) is a :class:`SQLiteStorage`;
    ``postgresql://user:password@host:5432/database`` is a :class:`PostgresStorage` (its
    ``schema`` and ``table_prefix`` may be given as query parameters:
    ``postgresql://host/db?schema=jobs&table_prefix=flux_``).

    >>> from_url("sqlite:///tmp/flux.db")
    SQLiteStorage('/tmp/flux.db', table_prefix='flux_')

    Raises:
        ValueError: an empty URL or an unknown scheme (the message lists the known ones).
    """
    if not isinstance(url, str) or not url:
        raise ValueError(
            f"a storage URL is needed, like sqlite:///flux.db or postgresql://host/db; got {url!r}"
        )
    scheme, sep, rest = url.partition("://")
    if not sep:
        return SQLiteStorage(url)
    if scheme == "sqlite":
        return SQLiteStorage(rest[1:] if rest.startswith("/") else rest or ":memory:")
    if scheme in _POSTGRES:
        return _postgres(url)
    raise ValueError(
        f"unknown storage URL scheme {scheme!r} in {url.split('@')[-1]!r}; use sqlite:///path/flux.db "
        "or postgresql://user@host:5432/database"
    )


def _postgres(url: str) -> PostgresStorage:
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    options = dict(query)
    rest = urllib.parse.urlencode([(k, v) for k, v in query if k not in ("schema", "table_prefix")])
    dsn = urllib.parse.urlunsplit(parts._replace(query=rest))
    return PostgresStorage(
        dsn, schema=options.get("schema", "public"), table_prefix=options.get("table_prefix", "flux_")
    )
