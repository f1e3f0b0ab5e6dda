"""Every SQL statement PostgresStorage runs, and the numbered schema migrations.

Table names come only from a validated ``schema`` and ``table_prefix`` (letters, digits,
underscore), always double-quoted; every value travels as a ``$n`` parameter. Rows use the same
column order and encoding as SQLite's (``flux.storage._sqlite_rows``): datetimes are integer
microseconds since the Unix epoch (UTC), JSON values compact text (exact, and text holds any
string). ``list`` filters on labels as ``jsonb``, through a GIN index on that expression (jsonb
holds no NUL character: there it becomes U+FFFD, in the filter as well); an index on an
expression is computed only when a row's labels are indexed, where a generated column was
computed by every write of the row. ``cancel_requested`` is only compared whole (set and not
empty), as text.

To change the schema, append a :class:`~flux.storage._sqlite_schema.Migration` to
:data:`MIGRATIONS` (never edit an applied one) and give new columns a type in ``_TYPES``.
"""

from __future__ import annotations

import hashlib
import re

from flux.storage._sqlite_schema import (
    CHECKPOINT_COLUMNS,
    RUN_COLUMNS,
    SAVE_COLUMNS,
    SIGNAL_COLUMNS,
    STEP_COLUMNS,
    Migration,
)

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MAX_SCHEMA = 63  # PostgreSQL's identifier limit (NAMEDATALEN - 1)
_MAX_PREFIX = 48  # the longest table or index name adds 15 characters to the prefix

# The PostgreSQL type of every run and step column (arrays of these carry batches).
_TYPES = {
    "id": "text", "workflow": "text", "fingerprint": "text", "status": "text", "input": "text",
    "created_at": "int8", "updated_at": "int8", "finished_at": "int8", "error": "text",
    "owner": "text", "lease_expires_at": "int8", "wake_at": "int8", "deadline_at": "int8",
    "cancel_requested": "text", "run_id": "text", "seq": "int4", "step": "text",
    "attempts": "int4", "started_at": "int8", "output": "text", "data_set": "text",
    "data_unset": "text", "condition": "bool", "actions": "text", "waiting_for": "text",
    "labels": "text", "logs": "text",
}  # fmt: skip

_FINISHED = "('completed', 'failed', 'rolled_back', 'cancelled')"
# Labels (JSON text) as jsonb, whose strings cannot hold NUL: JSON writes it as the escape
# \u0000, which becomes \ufffd here.
_LABEL_INDEX = "replace(labels, '\\u0000', '\\ufffd')::jsonb"
_WAKING = "status IN ('pending', 'suspended') AND wake_at IS NOT NULL"
_CANCELLING = f"cancel_requested IS NOT NULL AND status NOT IN {_FINISHED}"


def check_name(value: str, what: str, longest: int, example: str) -> str:
    """Return ``value`` if it is safe inside a quoted identifier, else raise ``ValueError``."""
    if not isinstance(value, str) or not _NAME.fullmatch(value) or len(value) > longest:
        raise ValueError(
            f"{what} must start with a letter or underscore and hold only letters, digits and "
            f"underscores (at most {longest}), got {value!r}; for example {what}={example!r}"
        )
    return value


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "runs, step records, signals and idempotency keys",
        (
            "CREATE SCHEMA IF NOT EXISTS {schema}",
            """CREATE TABLE {runs} (
                pos bigint GENERATED ALWAYS AS IDENTITY,
                id text PRIMARY KEY,
                workflow text NOT NULL,
                fingerprint text NOT NULL,
                status text NOT NULL,
                input text,
                created_at bigint NOT NULL,
                updated_at bigint NOT NULL,
                finished_at bigint,
                error text,
                owner text,
                lease_expires_at bigint,
                wake_at bigint,
                deadline_at bigint,
                cancel_requested text
            ) WITH (fillfactor = 80)""",
            "CREATE INDEX {p}runs_created ON {runs} (created_at, pos)",
            "CREATE INDEX {p}runs_workflow ON {runs} (workflow, created_at, pos)",
            "CREATE INDEX {p}runs_status ON {runs} (status, created_at)",
            "CREATE INDEX {p}runs_owner ON {runs} (owner) WHERE owner IS NOT NULL",
            f"CREATE INDEX {{p}}runs_wake ON {{runs}} (wake_at, pos) WHERE {_WAKING}",
            "CREATE INDEX {p}runs_flying ON {runs} (pos) WHERE status IN ('running', 'rolling_back')",
            """CREATE TABLE {steps} (
                run_id text NOT NULL,
                seq integer NOT NULL,
                step text NOT NULL,
                status text NOT NULL,
                attempts integer NOT NULL,
                started_at bigint,
                finished_at bigint,
                error text,
                output text,
                data_set text,
                data_unset text,
                condition boolean,
                actions text,
                wake_at bigint,
                waiting_for text,
                PRIMARY KEY (run_id, seq)
            )""",
            """CREATE TABLE {signals} (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                run_id text NOT NULL,
                name text NOT NULL,
                payload text,
                created_at bigint NOT NULL,
                consumed_by integer
            )""",
            "CREATE INDEX {p}signals_run ON {signals} (run_id, name, id)",
            """CREATE TABLE {keys} (
                workflow text NOT NULL,
                key text NOT NULL,
                run_id text NOT NULL,
                expires_at bigint NOT NULL,
                PRIMARY KEY (workflow, key)
            )""",
            "CREATE INDEX {p}keys_run ON {keys} (run_id)",
        ),
    ),
    Migration(
        2,
        "run labels and step logs",
        # labels: a JSON object as text (NULL: none); list filters on migration 3's jsonb copy.
        (
            "ALTER TABLE {runs} ADD COLUMN labels text",
            "ALTER TABLE {steps} ADD COLUMN logs text",
        ),
    ),
    Migration(
        3,
        "labels queried through a generated jsonb copy; signals refused past a limit",
        (
            f"ALTER TABLE {{runs}} ADD COLUMN label_index jsonb GENERATED ALWAYS AS ({_LABEL_INDEX}) STORED",
            "CREATE INDEX {p}runs_labels ON {runs} USING gin (label_index jsonb_path_ops)",
            # A function, so that the count of untaken signals is read after the run's row
            # lock is granted (each statement of a function sees what committed before it):
            # of concurrent signals past the limit, only the allowed number is stored.
            # Returns the new signal's id; NULL: the run is unknown or finished; -1: the limit.
            f"""CREATE FUNCTION {{add_signal}}(p_run text, p_name text, p_payload text,
                p_at bigint, p_limit integer) RETURNS bigint LANGUAGE plpgsql AS $$
            DECLARE
                found_status text;
                untaken integer;
                new_id bigint;
            BEGIN
                SELECT status INTO found_status FROM {{runs}} WHERE id = p_run FOR UPDATE;
                IF found_status IS NULL OR found_status IN {_FINISHED} THEN
                    RETURN NULL;
                END IF;
                IF p_limit IS NOT NULL THEN
                    SELECT count(*) INTO untaken FROM {{signals}}
                        WHERE run_id = p_run AND name = p_name AND consumed_by IS NULL;
                    IF untaken >= p_limit THEN
                        RETURN -1;
                    END IF;
                END IF;
                INSERT INTO {{signals}} (run_id, name, payload, created_at)
                    VALUES (p_run, p_name, p_payload, p_at) RETURNING id INTO new_id;
                IF found_status = 'suspended' THEN
                    UPDATE {{runs}} SET wake_at = p_at WHERE id = p_run;
                END IF;
                RETURN new_id;
            END $$""",
        ),
    ),
    Migration(
        4,
        "cheaper run-row writes: labels indexed as an expression; no index on owner",
        # PostgreSQL computes a stored generated column on every UPDATE of the row, whatever
        # changed: that was a tenth of a checkpoint's server work. The owner index held every
        # run a worker ever took (a finished run keeps its owner), and the planner, before the
        # table had statistics, picked it over the primary key for "id = $1 AND owner = $2":
        # one run's checkpoint then walked all of its owner's runs. Only cancel_requests looked
        # runs up by owner; it now reads the few unfinished runs with a cancellation requested.
        (
            "DROP INDEX {schema}.{p}runs_labels",  # (index names are not quoted: see migration 1)
            "ALTER TABLE {runs} DROP COLUMN label_index",
            f"CREATE INDEX {{p}}runs_labels ON {{runs}} USING gin (({_LABEL_INDEX}) jsonb_path_ops)",
            "DROP INDEX {schema}.{p}runs_owner",
            f"CREATE INDEX {{p}}runs_cancel ON {{runs}} (pos) WHERE {_CANCELLING}",
        ),
    ),
)
"""Every schema version in order; a database records each one it has applied."""

LATEST_VERSION = MIGRATIONS[-1].version


def _cols(columns: tuple[str, ...], alias: str = "") -> str:
    return ", ".join(alias + c for c in columns)


def _arrays(columns: tuple[str, ...], first: int) -> str:
    """``unnest`` arguments: one typed array parameter per column, from ``$first`` on."""
    return ", ".join(f"${first + i}::{_TYPES[c]}[]" for i, c in enumerate(columns))


def _sets(columns: tuple[str, ...]) -> str:
    return ", ".join(f"{c} = excluded.{c}" for c in columns)


_RUNS, _STEPS = len(RUN_COLUMNS), len(STEP_COLUMNS)
ONE_STEPS = 2
"""Step records a one-run checkpoint carries as plain parameters (more go as arrays)."""


def _step_slot(before: int) -> str:
    """One step record's parameters, from ``$before + 1``; no row when its run_id is NULL."""
    values = ", ".join(f"${before + i + 1}::{_TYPES[c]}" for i, c in enumerate(STEP_COLUMNS))
    return f"SELECT {values} FROM written WHERE ${before + 1}::text IS NOT NULL"


def _slots_upsert(before: int) -> str:
    """Upserts the step records given in ONE_STEPS slots from ``$before + 1`` on, for the run
    that ``written`` returns (none if it returns nothing)."""
    slots = " UNION ALL ".join(_step_slot(before + slot * _STEPS) for slot in range(ONE_STEPS))
    return (
        f"INSERT INTO {{steps}} AS s ({{step_cols}}) {slots} "
        f"ON CONFLICT (run_id, seq) DO UPDATE SET {_sets(STEP_COLUMNS[2:])}"
    )


TICK_SHAPES = 64
"""Tick statements made per storage, one per combination of step-row shapes (a workflow's
steps give a few; past this many, ticks use the all-parameters statement)."""

_TICK_RUN = (
    "WITH written AS (UPDATE {runs} SET updated_at = $1, lease_expires_at = $2 "
    "WHERE id = $3 AND owner = $4 RETURNING id)"
)


def _tick_template(shapes: tuple[int, ...]) -> str:
    """``checkpoint_tick`` with step records of the given shapes: the INSERT names only the
    columns some record holds (the others are NULL in ``excluded``, so the upsert still clears
    them), and a record without one of those says NULL for it."""
    if not shapes:
        return f"{_TICK_RUN} SELECT id FROM written"
    held = [index for index in range(_STEPS) if any(shape >> index & 1 for shape in shapes)]
    selects, number = [], 4
    for shape in shapes:
        values = []
        for index in held:
            column = STEP_COLUMNS[index]
            present = shape >> index & 1
            number += present
            values.append(f"${number}::{_TYPES[column]}" if present else f"NULL::{_TYPES[column]}")
        selects.append(f"SELECT {', '.join(values)} FROM written")
    columns = ", ".join(STEP_COLUMNS[index] for index in held)
    return (
        f"{_TICK_RUN}, steps AS (INSERT INTO {{steps}} AS s ({columns}) {' UNION ALL '.join(selects)} "
        f"ON CONFLICT (run_id, seq) DO UPDATE SET {_sets(STEP_COLUMNS[2:])}) SELECT id FROM written"
    )


_CHECKPOINT_SETS = ", ".join(
    "input = COALESCE(excluded.input, r.input)" if c == "input" else f"{c} = excluded.{c}"
    for c in CHECKPOINT_COLUMNS
)
# Upserts a batch of step records given as arrays from ${first} on, for runs listed in {written}.
_STEPS_UPSERT = (
    "INSERT INTO {steps} AS s ({step_cols}) SELECT g.* FROM unnest({step_arrays}) AS g({step_cols}) "
    "WHERE g.run_id IN (SELECT id FROM written) "
    f"ON CONFLICT (run_id, seq) DO UPDATE SET {_sets(STEP_COLUMNS[2:])}"
)

_TEMPLATES: dict[str, str] = {
    # --- schema bookkeeping ---
    "version_table": "SELECT to_regclass($1)",
    "lock": "SELECT pg_advisory_xact_lock(hashtext($1))",
    "create_version_table": (
        "CREATE TABLE IF NOT EXISTS {version} "
        "(version integer PRIMARY KEY, description text NOT NULL, applied_at timestamptz NOT NULL)"
    ),
    "current_version": "SELECT COALESCE(MAX(version), 0) FROM {version}",
    "record_version": "INSERT INTO {version} (version, description, applied_at) VALUES ($1, $2, now())",
    # --- runs ---
    "run_select": f"SELECT {_cols(RUN_COLUMNS)} FROM {{runs}} WHERE id = $1",
    # Parameters: one array per run column; returns the ids written (the others were fenced).
    "checkpoint": (
        f"WITH written AS (INSERT INTO {{runs}} AS r ({_cols(RUN_COLUMNS)}) "
        f"SELECT * FROM unnest({_arrays(RUN_COLUMNS, 1)}) "
        f"ON CONFLICT (id) DO UPDATE SET {_CHECKPOINT_SETS} "
        "WHERE r.owner = excluded.owner OR excluded.owner IS NULL RETURNING r.id), "
        f"steps AS ({_STEPS_UPSERT.replace('{step_arrays}', _arrays(STEP_COLUMNS, _RUNS + 1))}) "
        "SELECT id FROM written"
    ),
    # The same for one run and at most ONE_STEPS step records, as plain parameters (the run's
    # columns, then each step's, all NULL for a missing one): half the work of arrays, and the
    # common case (a step's end and the next one's start are checkpointed together).
    "checkpoint_one": (
        f"WITH written AS (INSERT INTO {{runs}} AS r ({_cols(RUN_COLUMNS)}) "
        f"VALUES ({', '.join(f'${i + 1}' for i in range(_RUNS))}) "
        f"ON CONFLICT (id) DO UPDATE SET {_CHECKPOINT_SETS} "
        "WHERE r.owner = excluded.owner OR excluded.owner IS NULL RETURNING r.id), "
        f"steps AS ({_slots_upsert(_RUNS)}) SELECT id FROM written"
    ),
    # A tick: a running run's new updated_at and lease ($1, $2) for run $3 held by owner $4,
    # with at most ONE_STEPS step records as in checkpoint_one; returns the id, or nothing (no
    # such row: then nothing is written).
    "checkpoint_tick": f"{_TICK_RUN}, steps AS ({_slots_upsert(4)}) SELECT id FROM written",
    "owners": "SELECT id, owner FROM {runs} WHERE id = ANY($1::text[])",
    # Parameters: the run's columns, then its step rows as arrays; old step records go.
    "save": (
        f"WITH written AS (INSERT INTO {{runs}} ({_cols(RUN_COLUMNS)}) "
        f"VALUES ({', '.join(f'${i + 1}' for i in range(_RUNS))}) "
        f"ON CONFLICT (id) DO UPDATE SET {_sets(SAVE_COLUMNS)} RETURNING id), "
        f"gone AS (DELETE FROM {{steps}} WHERE run_id = $1 AND seq <> ALL(${_RUNS + 2}::int4[])), "
        f"steps AS ({_STEPS_UPSERT.replace('{step_arrays}', _arrays(STEP_COLUMNS, _RUNS + 1))}) "
        "SELECT 1"
    ),
    "delete": (
        "WITH gone AS (DELETE FROM {runs} WHERE id = $1 RETURNING id), "
        "s AS (DELETE FROM {steps} WHERE run_id = $1), "
        "g AS (DELETE FROM {signals} WHERE run_id = $1), "
        "k AS (DELETE FROM {keys} WHERE run_id = $1) "
        "SELECT count(*) FROM gone"
    ),
    # Parameters: workflow or NULL, statuses or NULL, labels (a JSON object) or NULL, limit or
    # NULL, offset.
    "list": (
        f"SELECT {_cols(RUN_COLUMNS)} FROM {{runs}} WHERE ($1::text IS NULL OR workflow = $1) "
        "AND ($2::text[] IS NULL OR status = ANY($2::text[])) "
        f"AND ($3::text IS NULL OR {_LABEL_INDEX} @> {_LABEL_INDEX.replace('labels', '$3::text')}) "
        "ORDER BY created_at DESC, pos DESC LIMIT $4 OFFSET $5"
    ),
    # Parameters: the run's columns, then its step rows as arrays. Insert-only: returns the id
    # when stored, nothing when the id is taken.
    "create": (
        f"WITH written AS (INSERT INTO {{runs}} ({_cols(RUN_COLUMNS)}) "
        f"VALUES ({', '.join(f'${i + 1}' for i in range(_RUNS))}) "
        "ON CONFLICT (id) DO NOTHING RETURNING id), "
        f"steps AS ({_STEPS_UPSERT.replace('{step_arrays}', _arrays(STEP_COLUMNS, _RUNS + 1))}) "
        "SELECT id FROM written"
    ),
    # The same, binding an idempotency key (workflow, key, expiry: the three parameters after
    # the step arrays) to the new run, unless it is bound to a stored run unexpired at the
    # run's created_at: then that run's id comes back as ``bound`` and nothing is written.
    # Callers hold the key's advisory lock ("key_lock"), so concurrent creates see each other.
    "create_keyed": (
        f"WITH bound AS (SELECT k.run_id FROM {{keys}} AS k JOIN {{runs}} AS r ON r.id = k.run_id "
        f"WHERE k.workflow = ${_RUNS + _STEPS + 1} AND k.key = ${_RUNS + _STEPS + 2} "
        "AND k.expires_at > $6), "
        f"written AS (INSERT INTO {{runs}} ({_cols(RUN_COLUMNS)}) "
        f"SELECT {', '.join(f'${i + 1}::{_TYPES[c]}' for i, c in enumerate(RUN_COLUMNS))} "
        "WHERE NOT EXISTS (SELECT 1 FROM bound) ON CONFLICT (id) DO NOTHING RETURNING id), "
        f"steps AS ({_STEPS_UPSERT.replace('{step_arrays}', _arrays(STEP_COLUMNS, _RUNS + 1))}), "
        f"bind AS (INSERT INTO {{keys}} (workflow, key, run_id, expires_at) "
        f"SELECT ${_RUNS + _STEPS + 1}, ${_RUNS + _STEPS + 2}, id, ${_RUNS + _STEPS + 3} FROM written "
        "ON CONFLICT (workflow, key) DO UPDATE SET run_id = excluded.run_id, "
        "expires_at = excluded.expires_at) "
        "SELECT (SELECT run_id FROM bound) AS bound, (SELECT id FROM written) AS created"
    ),
    "key_lock": "SELECT pg_advisory_xact_lock(hashtext($1), hashtext($2))",
    "prune": (
        "WITH gone AS (DELETE FROM {runs} WHERE status = ANY($1::text[]) "
        "AND COALESCE(finished_at, updated_at) < $2 RETURNING id), "
        "s AS (DELETE FROM {steps} WHERE run_id IN (SELECT id FROM gone)), "
        "g AS (DELETE FROM {signals} WHERE run_id IN (SELECT id FROM gone)), "
        "k AS (DELETE FROM {keys} WHERE run_id IN (SELECT id FROM gone)) "
        "SELECT count(*) FROM gone"
    ),
    # --- step records ---
    "steps_select": f"SELECT {_cols(STEP_COLUMNS)} FROM {{steps}} WHERE run_id = $1 ORDER BY seq",
    "steps_select_many": (
        f"SELECT {_cols(STEP_COLUMNS)} FROM {{steps}} WHERE run_id = ANY($1::text[]) ORDER BY run_id, seq"
    ),
    # --- leases: SKIP LOCKED, so a run another claimer is taking is left to it at once ---
    # Parameters: owner, lease, run id, owner, takeover, now.
    "claim": (
        "WITH free AS (SELECT id FROM {runs} WHERE id = $3 AND (owner IS NULL "
        "OR lease_expires_at IS NULL OR owner = $4 OR owner = $5 OR lease_expires_at < $6) "
        f"FOR UPDATE SKIP LOCKED) UPDATE {{runs}} AS r SET owner = $1, lease_expires_at = $2 "
        f"FROM free WHERE r.id = free.id RETURNING {_cols(RUN_COLUMNS, 'r.')}"
    ),
    "renew": (
        "UPDATE {runs} SET lease_expires_at = $1 WHERE owner = $2 AND lease_expires_at IS NOT NULL "
        "AND id = ANY($3::text[])"
    ),
    "release": "UPDATE {runs} SET owner = NULL, lease_expires_at = NULL WHERE id = $1 AND owner = $2",
    # --- signals ---
    # Parameters: run id, name, payload, at, limit or NULL (see migration 3's function), the
    # wake-up channel. A stored signal (a positive id) is announced with NOTIFY in the same
    # transaction: listeners hear of it as it commits. (OFFSET 0 keeps the function to one call.)
    "add_signal": (
        "SELECT id, CASE WHEN id > 0 THEN pg_notify($6, 'signal ' || $1)::text END "
        "FROM (SELECT {add_signal}($1, $2, $3, $4, $5) AS id OFFSET 0) AS added"
    ),
    # Parameters: run id, name, seq. The signal visit seq took, else the oldest untaken one,
    # marked as taken (SKIP LOCKED: a concurrent visit takes the next one).
    "take_signal": (
        f"WITH taken AS (SELECT {_cols(SIGNAL_COLUMNS)} FROM {{signals}} "
        "WHERE run_id = $1 AND name = $2 AND consumed_by = $3 ORDER BY id LIMIT 1), "
        "pick AS (SELECT id FROM {signals} WHERE run_id = $1 AND name = $2 AND consumed_by IS NULL "
        "AND NOT EXISTS (SELECT 1 FROM taken) ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED), "
        "took AS (UPDATE {signals} AS s SET consumed_by = $3 FROM pick WHERE s.id = pick.id "
        f"RETURNING {_cols(SIGNAL_COLUMNS, 's.')}) "
        "SELECT * FROM taken UNION ALL SELECT * FROM took"
    ),
    "signals_select": f"SELECT {_cols(SIGNAL_COLUMNS)} FROM {{signals}} WHERE run_id = $1 ORDER BY id",
    # --- workers ---
    "due": (
        f"SELECT {_cols(RUN_COLUMNS)} FROM {{runs}} WHERE {_WAKING} AND wake_at <= $1 "
        "ORDER BY wake_at, pos LIMIT $2"
    ),
    "next_wake": f"SELECT MIN(wake_at) FROM {{runs}} WHERE {_WAKING}",
    "orphans": (
        f"SELECT {_cols(RUN_COLUMNS)} FROM {{runs}} WHERE status IN ('running', 'rolling_back') "
        "AND (owner IS NULL OR lease_expires_at IS NULL OR lease_expires_at < $1 "
        "OR starts_with(owner, $2)) ORDER BY pos LIMIT $3"
    ),
    "request_cancel": (
        f"UPDATE {{runs}} SET cancel_requested = $1 WHERE id = $2 AND status NOT IN {_FINISHED}"
    ),
    "cancel_requests": (
        f"SELECT {_cols(RUN_COLUMNS)} FROM {{runs}} WHERE {_CANCELLING} AND owner = $1 "
        "AND cancel_requested <> '{{}}' ORDER BY pos"
    ),
    # --- wake-ups ---
    "notify": "SELECT pg_notify($1, message) FROM unnest($2::text[]) AS message",
}


class Statements:
    """The SQL of one ``schema`` and ``table_prefix``, formatted once; keys are the template names."""

    def __init__(self, schema: str, prefix: str) -> None:
        check_name(schema, "schema", _MAX_SCHEMA, "public")
        check_name(prefix, "table_prefix", _MAX_PREFIX, "flux_")
        self.schema, self.prefix = schema, prefix
        self.tables = {name: f'"{schema}"."{prefix}{name}"' for name in ("runs", "steps", "signals", "keys")}
        self.tables["version"] = f'"{schema}"."{prefix}schema"'
        self.tables["add_signal"] = f'"{schema}"."{prefix}add_signal"'
        self.version_table = f'"{schema}"."{prefix}schema"'
        self.lock_key = f"flux migrations {schema}.{prefix}"
        digest = hashlib.sha256(f"{schema}.{prefix}".encode()).hexdigest()[:16]
        self.channel = f"flux_wake_{digest}"
        """The LISTEN/NOTIFY channel of this schema and prefix (a short, fixed-length name)."""
        self._sql = {name: self._format(text) for name, text in _TEMPLATES.items()}
        self._ticks: dict[tuple[int, ...], str] = {}

    def _format(self, text: str) -> str:
        return text.format(
            **self.tables,
            schema=f'"{self.schema}"',
            p=self.prefix,
            step_cols=_cols(STEP_COLUMNS),
        )

    def __getitem__(self, name: str) -> str:
        return self._sql[name]

    def tick(self, shapes: tuple[int, ...]) -> str | None:
        """The ``checkpoint_tick`` statement for step records of these shapes (bit ``i`` set:
        column ``i`` of ``STEP_COLUMNS`` is not NULL, as in ``StepParams``), each given only
        its present columns (the rest are NULL in the statement, not parameters): $1-$4 as in
        ``checkpoint_tick``, then each row's present columns. None once :data:`TICK_SHAPES`
        statements exist (then use ``checkpoint_tick``)."""
        sql = self._ticks.get(shapes)
        if sql is None:
            if len(self._ticks) >= TICK_SHAPES:
                return None
            sql = self._ticks[shapes] = self._format(_tick_template(shapes))
        return sql

    def migration(self, migration: Migration) -> list[str]:
        """``migration``'s statements for this schema and prefix."""
        return [self._format(text) for text in migration.statements]
