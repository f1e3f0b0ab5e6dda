"""Every SQL statement SQLiteStorage runs, and the numbered schema migrations.

Table names come only from a validated ``table_prefix`` (letters, digits, underscore); every
value travels as a ``?`` parameter. Datetimes are stored as integer microseconds since the Unix
epoch (UTC), JSON values as compact text.

To change the schema, append a :class:`Migration` to :data:`MIGRATIONS` (never edit an applied
one) and adjust the column lists below.
"""

from __future__ import annotations

import re
from typing import Any

import attrs

_PREFIX = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_NONE = type(None)
_MAX_VARIANTS = 64  # statements with literal NULLs kept (sqlite3 caches 128 prepared statements)
_MAX_UPSERTS = 32  # step upserts by shapes kept (the same cache)

RUN_COLUMNS = (
    "id", "workflow", "fingerprint", "status", "input", "created_at", "updated_at", "finished_at",
    "error", "owner", "lease_expires_at", "wake_at", "deadline_at", "cancel_requested", "labels",
)  # fmt: skip
"""The runs table's columns in the order the row encoders use (``pos`` aside)."""

STEP_COLUMNS = (
    "run_id", "seq", "step", "status", "attempts", "started_at", "finished_at", "error", "output",
    "data_set", "data_unset", "condition", "actions", "wake_at", "waiting_for", "logs",
)  # fmt: skip
"""The step records table's columns, in encoder order."""

SIGNAL_COLUMNS = ("id", "run_id", "name", "payload", "created_at", "consumed_by")

# What checkpoint rewrites on an existing run: neither the key, nor created_at and labels (set
# once), nor cancel_requested (only request_cancel sets it).
CHECKPOINT_COLUMNS = tuple(
    c for c in RUN_COLUMNS if c not in ("id", "created_at", "cancel_requested", "labels")
)
# The columns that no index covers. Rewriting an indexed column, even with the value it has,
# dirties index pages: most checkpoints change none, so they first try an UPDATE that sets only
# these and matches the indexed ones (plus the owner, for fencing) in its WHERE.
STEADY_COLUMNS = (
    "fingerprint", "input", "updated_at", "finished_at", "error", "lease_expires_at", "deadline_at",
)  # fmt: skip
STEADY_KEEP_INPUT = tuple(c for c in STEADY_COLUMNS if c != "input")
_STEADY_WHERE = "WHERE id = ? AND owner IS ? AND workflow = ? AND status = ? AND wake_at IS ?"
SAVE_COLUMNS = tuple(c for c in RUN_COLUMNS if c not in ("id", "created_at"))

_FINISHED = "('completed', 'failed', 'rolled_back', 'cancelled')"
_WAKING = "status IN ('pending', 'suspended') AND wake_at IS NOT NULL"


def check_prefix(prefix: str) -> str:
    """Return ``prefix`` if it is safe in a table name, else raise ``ValueError``."""
    if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
        raise ValueError(
            f"table_prefix must start with a letter or underscore and hold only letters, digits "
            f"and underscores (at most 64), got {prefix!r}; for example table_prefix='flux_'"
        )
    return prefix


@attrs.frozen
class Migration:
    """One numbered schema change: its statements run in one transaction with its record."""

    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "runs and step records",
        (
            """CREATE TABLE {runs} (
                pos INTEGER PRIMARY KEY,
                id TEXT NOT NULL UNIQUE,
                workflow TEXT NOT NULL,
                fingerprint TEXT NOT NULL,
                status TEXT NOT NULL,
                input TEXT,
                created_at INTEGER NOT NULL,
                updated_at INTEGER NOT NULL,
                finished_at INTEGER,
                error TEXT,
                owner TEXT,
                lease_expires_at INTEGER
            )""",
            # pos (the rowid) ends every index, so ties of created_at come out in insertion order.
            "CREATE INDEX {runs}_created ON {runs} (created_at)",
            "CREATE INDEX {runs}_workflow ON {runs} (workflow, created_at)",
            "CREATE INDEX {runs}_status ON {runs} (status, created_at)",
            "CREATE INDEX {runs}_owner ON {runs} (owner) WHERE owner IS NOT NULL",
            """CREATE TABLE {steps} (
                run_id TEXT NOT NULL,
                seq INTEGER NOT NULL,
                step TEXT NOT NULL,
                status TEXT NOT NULL,
                attempts INTEGER NOT NULL,
                started_at INTEGER,
                finished_at INTEGER,
                error TEXT,
                output TEXT,
                data_set TEXT,
                data_unset TEXT,
                condition INTEGER,
                actions TEXT,
                PRIMARY KEY (run_id, seq)
            ) WITHOUT ROWID""",
        ),
    ),
    Migration(
        2,
        "timers, signals, cancellation requests and idempotency keys",
        (
            "ALTER TABLE {runs} ADD COLUMN wake_at INTEGER",
            "ALTER TABLE {runs} ADD COLUMN deadline_at INTEGER",
            "ALTER TABLE {runs} ADD COLUMN cancel_requested TEXT",
            # Partial: only waiting runs with a wake-up time, which `due` and `next_wake` read
            # in wake_at order (their WHERE repeats this one's terms so SQLite can use it).
            f"CREATE INDEX {{runs}}_wake ON {{runs}} (wake_at) WHERE {_WAKING}",
            "ALTER TABLE {steps} ADD COLUMN wake_at INTEGER",
            "ALTER TABLE {steps} ADD COLUMN waiting_for TEXT",
            """CREATE TABLE {signals} (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                run_id TEXT NOT NULL,
                name TEXT NOT NULL,
                payload TEXT,
                created_at INTEGER NOT NULL,
                consumed_by INTEGER
            )""",
            "CREATE INDEX {signals}_run ON {signals} (run_id, name)",
            """CREATE TABLE {keys} (
                workflow TEXT NOT NULL,
                key TEXT NOT NULL,
                run_id TEXT NOT NULL,
                expires_at INTEGER NOT NULL,
                PRIMARY KEY (workflow, key)
            )""",
        ),
    ),
    Migration(
        3,
        "idempotency keys leave with their run (delete and prune)",
        ("CREATE INDEX {keys}_run ON {keys} (run_id)",),
    ),
    Migration(
        4,
        "run labels",
        # A JSON object (NULL: no labels); list filters with json_each.
        ("ALTER TABLE {runs} ADD COLUMN labels TEXT",),
    ),
    Migration(
        5,
        "step logs: the lines handlers logged through ctx.log",
        ("ALTER TABLE {steps} ADD COLUMN logs TEXT",),
    ),
)
"""Every schema version in order; a database records each one it has applied."""

LATEST_VERSION = MIGRATIONS[-1].version


def _cols(columns: tuple[str, ...], alias: str = "") -> str:
    return ", ".join(alias + c for c in columns)


def _marks(columns: tuple[str, ...]) -> str:
    return ", ".join("?" for _ in columns)


def _sets(columns: tuple[str, ...]) -> str:
    return ", ".join(f"{c} = excluded.{c}" for c in columns)


_TEMPLATES: dict[str, str] = {
    # --- schema bookkeeping ---
    "has_version_table": "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '{schema}'",
    "create_version_table": (
        "CREATE TABLE IF NOT EXISTS {schema} "
        "(version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at TEXT NOT NULL)"
    ),
    "current_version": "SELECT COALESCE(MAX(version), 0) FROM {schema}",
    "record_version": "INSERT INTO {schema} (version, description, applied_at) VALUES (?, ?, ?)",
    # --- runs ---
    "run_select": f"SELECT {_cols(RUN_COLUMNS)} FROM {{runs}} WHERE id = ?",
    "run_owner": "SELECT owner FROM {runs} WHERE id = ?",
    "run_insert": f"INSERT INTO {{runs}} ({_cols(RUN_COLUMNS)}) VALUES ({_marks(RUN_COLUMNS)})",
    "run_upsert": (
        f"INSERT INTO {{runs}} ({_cols(RUN_COLUMNS)}) VALUES ({_marks(RUN_COLUMNS)}) "
        f"ON CONFLICT (id) DO UPDATE SET {_sets(SAVE_COLUMNS)}"
    ),
    # Parameters: the CHECKPOINT_COLUMNS values, then id, then the writer's owner twice.
    "run_checkpoint": (
        f"UPDATE {{runs}} SET {', '.join(c + ' = ?' for c in CHECKPOINT_COLUMNS)} "
        "WHERE id = ? AND (? IS NULL OR owner = ?)"
    ),
    # Parameters: the STEADY_COLUMNS (or STEADY_KEEP_INPUT) values, then id, owner, workflow,
    # status, wake_at.
    "run_steady": f"UPDATE {{runs}} SET {', '.join(c + ' = ?' for c in STEADY_COLUMNS)} {_STEADY_WHERE}",
    "run_steady_keep_input": (
        f"UPDATE {{runs}} SET {', '.join(c + ' = ?' for c in STEADY_KEEP_INPUT)} {_STEADY_WHERE}"
    ),
    # A new run's first write (ignored, and then fenced, when the id is stored already).
    "run_insert_new": (
        f"INSERT INTO {{runs}} ({_cols(RUN_COLUMNS)}) VALUES ({_marks(RUN_COLUMNS)}) ON CONFLICT DO NOTHING"
    ),
    # A running run whose other fields are as this process last wrote them: only these two
    # change (neither indexed). Parameters: updated_at, lease_expires_at, id, owner.
    "run_tick": "UPDATE {runs} SET updated_at = ?, lease_expires_at = ? WHERE id = ? AND owner = ?",
    "run_delete": "DELETE FROM {runs} WHERE id = ?",
    "list": f"SELECT {_cols(RUN_COLUMNS)} FROM {{runs}}{{where}} ORDER BY created_at DESC, pos DESC "
    "LIMIT ? OFFSET ?",
    # --- step records ---
    "steps_select": f"SELECT {_cols(STEP_COLUMNS)} FROM {{steps}} WHERE run_id = ? ORDER BY seq",
    "steps_select_many": f"SELECT {_cols(STEP_COLUMNS)} FROM {{steps}} WHERE run_id IN ({{marks}}) "
    "ORDER BY run_id, seq",
    "step_upsert": (
        f"INSERT INTO {{steps}} ({_cols(STEP_COLUMNS)}) VALUES ({_marks(STEP_COLUMNS)}) "
        f"ON CONFLICT (run_id, seq) DO UPDATE SET {_sets(STEP_COLUMNS[2:])}"
    ),
    "steps_delete": "DELETE FROM {steps} WHERE run_id = ?",
    # --- pruning: parameters are the statuses ({marks}) then older_than ---
    "prune_where": "status IN ({marks}) AND COALESCE(finished_at, updated_at) < ?",
    "prune_steps": "DELETE FROM {steps} WHERE run_id IN (SELECT id FROM {runs} WHERE {where})",
    "prune_signals": "DELETE FROM {signals} WHERE run_id IN (SELECT id FROM {runs} WHERE {where})",
    "prune_keys": "DELETE FROM {keys} WHERE run_id IN (SELECT id FROM {runs} WHERE {where})",
    "prune_runs": "DELETE FROM {runs} WHERE {where}",
    # --- leases ---
    "claim": (
        "UPDATE {runs} SET owner = ?, lease_expires_at = ? WHERE id = ? AND (owner IS NULL "
        "OR lease_expires_at IS NULL OR owner = ? OR owner = ? OR lease_expires_at < ?)"
    ),
    "renew": (
        "UPDATE {runs} SET lease_expires_at = ? WHERE owner = ? AND lease_expires_at IS NOT NULL "
        "AND id IN ({marks})"
    ),
    "release": "UPDATE {runs} SET owner = NULL, lease_expires_at = NULL WHERE id = ? AND owner = ?",
    # --- signals ---
    "run_status": "SELECT status FROM {runs} WHERE id = ?",
    "signal_insert": "INSERT INTO {signals} (run_id, name, payload, created_at) VALUES (?, ?, ?, ?)",
    "run_wake": "UPDATE {runs} SET wake_at = ? WHERE id = ?",
    "signal_taken": (
        f"SELECT {_cols(SIGNAL_COLUMNS)} FROM {{signals}} "
        "WHERE run_id = ? AND name = ? AND consumed_by = ? ORDER BY id LIMIT 1"
    ),
    "signal_untaken": (
        f"SELECT {_cols(SIGNAL_COLUMNS)} FROM {{signals}} "
        "WHERE run_id = ? AND name = ? AND consumed_by IS NULL ORDER BY id LIMIT 1"
    ),
    "signals_untaken": "SELECT COUNT(*) FROM {signals} WHERE run_id = ? AND name = ? AND consumed_by IS NULL",
    "signal_take": "UPDATE {signals} SET consumed_by = ? WHERE id = ?",
    "signals_select": f"SELECT {_cols(SIGNAL_COLUMNS)} FROM {{signals}} WHERE run_id = ? ORDER BY id",
    "signals_delete": "DELETE FROM {signals} WHERE run_id = ?",
    "keys_delete": "DELETE FROM {keys} WHERE run_id = ?",
    # --- workers ---
    "due": (
        f"SELECT {_cols(RUN_COLUMNS)} FROM {{runs}} INDEXED BY {{runs}}_wake "
        f"WHERE {_WAKING} AND wake_at <= ? ORDER BY wake_at, pos LIMIT ?"
    ),
    "next_wake": f"SELECT MIN(wake_at) FROM {{runs}} INDEXED BY {{runs}}_wake WHERE {_WAKING}",
    "orphans": (
        f"SELECT {_cols(RUN_COLUMNS)} FROM {{runs}} WHERE status IN ('running', 'rolling_back') "
        "AND (owner IS NULL OR lease_expires_at IS NULL OR lease_expires_at < ? "
        "OR substr(owner, 1, length(?)) = ?) ORDER BY pos LIMIT ?"
    ),
    "request_cancel": (
        f"UPDATE {{runs}} SET cancel_requested = ? WHERE id = ? AND status NOT IN {_FINISHED}"
    ),
    "cancel_requests": (
        f"SELECT {_cols(RUN_COLUMNS)} FROM {{runs}} WHERE owner = ? AND cancel_requested IS NOT NULL "
        f"AND cancel_requested != '{{{{}}}}' AND status NOT IN {_FINISHED} ORDER BY pos"
    ),
    # --- idempotency keys ---
    "key_bound": (
        "SELECT k.run_id FROM {keys} AS k JOIN {runs} AS r ON r.id = k.run_id "
        "WHERE k.workflow = ? AND k.key = ? AND k.expires_at > ?"
    ),
    "key_bind": (
        "INSERT INTO {keys} (workflow, key, run_id, expires_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (workflow, key) DO UPDATE SET run_id = excluded.run_id, "
        "expires_at = excluded.expires_at"
    ),
}


class Statements:
    """The SQL of one ``table_prefix``, formatted once; attribute names are the template keys."""

    def __init__(self, prefix: str) -> None:
        check_prefix(prefix)
        self.prefix = prefix
        self.tables = {
            "runs": f"{prefix}runs",
            "steps": f"{prefix}steps",
            "signals": f"{prefix}signals",
            "keys": f"{prefix}keys",
            "schema": f"{prefix}schema",
        }
        self._sql = {name: self._format(text) for name, text in _TEMPLATES.items()}
        self._with_nulls: dict[tuple[str, tuple[type, ...]], str] = {}
        self._upserts: dict[tuple[int, ...], str] = {}

    def _format(self, text: str) -> str:
        # Leave {marks} and {where} for the statements that take a variable number of values.
        return text.format(**self.tables, marks="{marks}", where="{where}")

    def __getitem__(self, name: str) -> str:
        return self._sql[name]

    def migration(self, migration: Migration) -> list[str]:
        """``migration``'s statements for this prefix."""
        return [self._format(text) for text in migration.statements]

    def list_runs(self, by_workflow: bool, statuses: int, labels: int = 0) -> str:
        """The ``list`` query; parameters: the workflow (if any), the statuses, a key and a
        value per label, limit, offset."""
        where = []
        if by_workflow:
            where.append("workflow = ?")
        if statuses:
            where.append(f"status IN ({', '.join('?' for _ in range(statuses))})")
        runs = self.tables["runs"]
        label = f"EXISTS (SELECT 1 FROM json_each({runs}.labels) WHERE key = ? AND value = ?)"
        where.extend(label for _ in range(labels))
        return self._sql["list"].format(where=" WHERE " + " AND ".join(where) if where else "")

    def upsert_steps(self, shapes: tuple[int, ...]) -> str:
        """The statement that upserts one step record per shape (see ``step_params``): ``?``
        for the columns a shape has, NULL for the others; parameters: the rows' values, one
        row after another."""
        sql = self._upserts.get(shapes)
        if sql is None:
            row = f"({_marks(STEP_COLUMNS)})"
            rows = ", ".join(
                "(" + ", ".join("?" if shape >> i & 1 else "NULL" for i in range(len(STEP_COLUMNS))) + ")"
                for shape in shapes
            )
            sql = self._sql["step_upsert"].replace(f"VALUES {row}", f"VALUES {rows}", 1)
            if len(self._upserts) < _MAX_UPSERTS:
                self._upserts[shapes] = sql
        return sql

    def bind(self, sql: str, params: tuple[Any, ...]) -> tuple[str, tuple[Any, ...]]:
        """Statement ``sql`` with a literal NULL in place of each ``?`` whose value is None.

        Returns the statement and the parameters left. Python's sqlite3 module binds a None
        only after a failed adapter lookup (thousands of instructions per value), while a
        checkpoint's rows hold a dozen Nones; the variants are few, each prepared once and
        kept in the connection's statement cache.
        """
        types = tuple(map(type, params))  # a cheap key: the None positions follow from it
        if _NONE not in types:
            return sql, params
        key = (sql, types)
        variant = self._with_nulls.get(key)
        if variant is None:
            parts = sql.split("?")
            if len(parts) != len(params) + 1:
                raise ValueError(f"{sql!r} takes {len(parts) - 1} parameters, got {len(params)}")
            marks = ["NULL" if kind is _NONE else "?" for kind in types]
            variant = parts[0] + "".join(mark + part for mark, part in zip(marks, parts[1:], strict=True))
            if len(self._with_nulls) < _MAX_VARIANTS:
                self._with_nulls[key] = variant
        return variant, tuple([value for value in params if value is not None])

    def with_marks(self, name: str, count: int, *, where: str = "") -> str:
        """A statement whose ``IN ({marks})`` list takes ``count`` parameters."""
        marks = ", ".join("?" for _ in range(count))
        return self._sql[name].format(marks=marks, where=where.format(marks=marks))
