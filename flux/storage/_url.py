"""``from_url``: one storage URL names a database everywhere (CLI, server, worker, config).

``sqlite:///relative/flux.db``, ``sqlite:////absolute/flux.db``, ``sqlite:///:memory:`` and a
bare path (``flux.db``, ``/var/lib/flux.db``) open :class:`SQLiteStorage`;
``postgresql://user:password@host:5432/database`` (or ``postgres://``) opens
:class:`PostgresStorage`, whose ``schema`` and ``table_prefix`` may be given as query
parameters (``postgresql://host/db?schema=jobs&table_prefix=flux_``). Further schemes register
a factory in :data:`SCHEMES`.
"""

from __future__ import annotations

import difflib
import os
import urllib.parse
from collections.abc import Callable

from flux.storage.postgres import PostgresStorage
from flux.storage.protocol import Storage
from flux.storage.sqlite import SQLiteStorage

DEFAULT_URL = "sqlite:///flux.db"
"""The storage of the CLI, the server and the worker when neither ``--db`` nor ``FLUX_DB`` says."""


def _sqlite(url: str) -> Storage:
    path = url.partition("://")[2]
    if not path.startswith("/") or path == "/":
        raise ValueError(
            f"storage URL {url!r} names no file; write sqlite:///flux.db for a file in the current "
            "directory or sqlite:////var/lib/flux.db for an absolute path"
        )
    path = path[1:]  # sqlite:///flux.db -> flux.db, sqlite:////tmp/flux.db -> /tmp/flux.db
    if "?" in path:
        raise ValueError(f"storage URL {url!r} has a query string; sqlite URLs take none")
    return SQLiteStorage(path)


def _postgres(url: str) -> Storage:
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    options = dict(query)
    rest = urllib.parse.urlencode([(k, v) for k, v in query if k not in ("schema", "table_prefix")])
    dsn = urllib.parse.urlunsplit(parts._replace(query=rest))
    return PostgresStorage(
        dsn, schema=options.get("schema", "public"), table_prefix=options.get("table_prefix", "flux_")
    )


SCHEMES: dict[str, Callable[[str], Storage]] = {
    "sqlite": _sqlite,
    "postgresql": _postgres,
    "postgres": _postgres,
}
"""Storage factories by URL scheme; each takes the whole URL."""


def from_url(url: str | os.PathLike[str]) -> Storage:
    """The (unopened) storage a URL names.

    >>> from_url("sqlite:///flux.db")
    SQLiteStorage('flux.db', table_prefix='flux_')
    >>> from_url("runs/flux.db")
    SQLiteStorage('runs/flux.db', table_prefix='flux_')

    Raises:
        ValueError: the URL is empty, has an unknown scheme (the message lists the known ones
            and the closest match) or names no database.
    """
    text = os.fspath(url).strip()
    if not text:
        raise ValueError(f"the storage URL is empty; use for example {DEFAULT_URL}")
    scheme, sep, _ = text.partition("://")
    if not sep:
        return SQLiteStorage(text)  # a bare path is a SQLite file
    factory = SCHEMES.get(scheme.lower())
    if factory is None:
        known = ", ".join(f"{name}://" for name in sorted(SCHEMES))
        close = difflib.get_close_matches(scheme.lower(), SCHEMES, n=1)
        hint = f" (did you mean {close[0]}://?)" if close else ""
        raise ValueError(f"unknown storage URL scheme {scheme!r}{hint}; use one of: {known}, or a file path")
    return factory(text)
