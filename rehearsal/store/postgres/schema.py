"""The tables of a memory in its PostgreSQL schema, made in one transaction with the manifest.

    mem_meta       key -> value: generation, next_id, count, format, the manifest (JSON), the row-set
                   sum (format 3), the commit record's tag (see ``rehearsal.store.authenticity``),
                   policy state
    entries        one row per entry: metadata columns, the vector (pgvector, in the clear: the server
                   searches it), the generation that added it, the row's tag (``mac``)
    removed        id -> the generation that removed it (readers catch up from it)
    mem_touch      one counter: the mark of the last transaction that inserted, updated or deleted an entry
    vault_meta     store_id, kek_fingerprint, kek_check       (only in memories with keys)
    vault_tenants  vault_keys  vault_records                  the sealed texts and wrapped data keys,
                                                              laid out as in the SQLite vault

Every insert and every UPDATE of ``entries`` (a writer's, or an administrator's by hand) sets the row's
``touched`` column to its transaction's mark, taken from ``mem_touch`` by a trigger: a handle that saw
mark M re-checks the tags of the rows touched after M before its next query that selects by metadata
(``ServerRecords.check_rows_since``), as a folder store does on SQLite's ``data_version``. The counter row
is locked until its transaction commits, so marks are taken in commit order and a snapshot that sees mark
M sees every row touched up to M. A DELETE or TRUNCATE takes a mark too (a statement trigger): it leaves
no row to carry one, but a handle that sees the counter move compares the table with the sealed row set
(:mod:`rehearsal.store.postgres.rowset`). (An administrator who drops the triggers is out of their reach;
the tags of what is returned or removed are still checked, and the row count when the memory opens.)
Memories made before a trigger get it when a writer next opens them.

A label is an int or a name: ``label_int`` holds the first, ``label_text`` the second, so range filters
compare integers only and equality keeps the two kinds apart (as SQLite's typed values do).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from rehearsal.errors import StoreFormatError, ValidationError
from rehearsal.store.postgres.connection import ServerConnection

__all__ = ["FORMAT_VERSION", "create_schema", "ensure_touch", "has_touch", "read_manifest_row"]

# Format 2, as the embedded store: rows and the commit record carry tags. Format 3: a row's tag covers its
# vector too, and the commit record seals the row set; a writer's open moves a format-2 memory to it
# (rehearsal.store.postgres.rowset), and format 2 is still read until then. (A format-1 server memory was
# never released: it is refused, not migrated.)
FORMAT_VERSION = 3
READABLE_FORMATS = (2, 3)


def _ddl(dim: int) -> list[str]:
    return [
        "CREATE TABLE mem_meta (key text PRIMARY KEY, value text NOT NULL)",
        f"""CREATE TABLE entries (
            id bigint PRIMARY KEY,
            tenant text NOT NULL,
            task text,
            label_int bigint,
            label_text text,
            tags text[] NOT NULL DEFAULT '{{}}',
            extra text NOT NULL DEFAULT '{{}}',
            source text,
            embedding vector({int(dim)}) NOT NULL,
            added_gen bigint NOT NULL,
            created_at double precision NOT NULL,
            mac bytea NOT NULL
        )""",
        "CREATE INDEX entries_added_gen ON entries (added_gen)",
        "CREATE INDEX entries_tenant ON entries (tenant)",
        "CREATE INDEX entries_task ON entries (task)",
        "CREATE INDEX entries_label ON entries (label_int)",
        "CREATE TABLE removed (id bigint PRIMARY KEY, gen bigint NOT NULL)",
        "CREATE INDEX removed_gen ON removed (gen)",
    ]


VAULT_DDL = [
    "CREATE TABLE vault_meta (name text PRIMARY KEY, value bytea NOT NULL)",
    "CREATE TABLE vault_tenants (id bigint PRIMARY KEY, name text NOT NULL UNIQUE)",
    "CREATE TABLE vault_keys (id bigint PRIMARY KEY, tenant_id bigint NOT NULL, version integer NOT NULL,"
    " wrapped bytea NOT NULL, encryptions bigint NOT NULL, UNIQUE (tenant_id, version))",
    "CREATE TABLE vault_records (id bigint PRIMARY KEY, key_id bigint NOT NULL, sealed bytea NOT NULL)",
    "CREATE INDEX vault_records_key ON vault_records (key_id)",
]


def _touch_ddl(schema: str) -> list[str]:
    # The schema is named in the function's body: the trigger also fires in an administrator's session,
    # whose search_path does not hold it. Schema names are checked SQL names ([a-z_][a-z0-9_]*).
    q = f'"{schema}"'
    return [
        f"CREATE TABLE IF NOT EXISTS {q}.mem_touch (n bigint NOT NULL)",
        f"INSERT INTO {q}.mem_touch (n) SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM {q}.mem_touch)",
        f"ALTER TABLE {q}.entries ADD COLUMN IF NOT EXISTS touched bigint NOT NULL DEFAULT 0",
        f"CREATE INDEX IF NOT EXISTS entries_touched ON {q}.entries (touched)",
        f"""CREATE OR REPLACE FUNCTION {q}.entries_touch() RETURNS trigger LANGUAGE plpgsql AS $fn$
        DECLARE
            mark text := current_setting('rehearsal_touch.{schema}', true);
        BEGIN
            IF mark IS NULL OR mark = '' THEN  -- the transaction's first row: take its mark
                UPDATE {q}.mem_touch SET n = n + 1 RETURNING n::text INTO mark;
                PERFORM set_config('rehearsal_touch.{schema}', mark, true);
            END IF;
            NEW.touched := mark::bigint;
            RETURN NEW;
        END
        $fn$""",
        f"DROP TRIGGER IF EXISTS entries_touch ON {q}.entries",
        f"CREATE TRIGGER entries_touch BEFORE INSERT OR UPDATE ON {q}.entries"
        f" FOR EACH ROW EXECUTE FUNCTION {q}.entries_touch()",
        *_removal_ddl(schema),
    ]


def _removal_ddl(schema: str) -> list[str]:
    q = f'"{schema}"'
    return [
        f"""CREATE OR REPLACE FUNCTION {q}.entries_touch_removal() RETURNS trigger LANGUAGE plpgsql AS $fn$
        DECLARE
            mark text := current_setting('rehearsal_touch.{schema}', true);
        BEGIN
            IF mark IS NULL OR mark = '' THEN  -- the transaction's first change: take its mark
                UPDATE {q}.mem_touch SET n = n + 1 RETURNING n::text INTO mark;
                PERFORM set_config('rehearsal_touch.{schema}', mark, true);
            END IF;
            RETURN NULL;
        END
        $fn$""",
        f"DROP TRIGGER IF EXISTS entries_touch_removal ON {q}.entries",
        f"CREATE TRIGGER entries_touch_removal AFTER DELETE OR TRUNCATE ON {q}.entries"
        f" FOR EACH STATEMENT EXECUTE FUNCTION {q}.entries_touch_removal()",
    ]


def has_touch(conn: ServerConnection) -> bool:
    """Whether the memory's entries carry the ``touched`` mark (see the module docstring)."""
    found = conn.execute(
        "SELECT 1 FROM information_schema.tables WHERE table_schema = %s AND table_name = 'mem_touch'",
        (conn.location.schema,),
    ).fetchone()
    return found is not None


def ensure_touch(conn: ServerConnection) -> None:
    """Give a memory made before the ``touched`` marks its counter, column and triggers, or one made before
    deletions took marks its removal trigger (in the caller's transaction; a writer's open). Existing rows
    have mark 0: a handle checks them all once anyway."""
    schema = conn.location.schema
    if not has_touch(conn):
        statements = _touch_ddl(schema)
    elif not conn.execute(
        "SELECT 1 FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE t.tgname = 'entries_touch_removal' AND n.nspname = %s AND c.relname = 'entries'",
        (schema,),
    ).fetchone():
        statements = _removal_ddl(schema)
    else:
        return
    for statement in statements:
        conn.execute(statement)


def create_schema(conn: ServerConnection, *, dim: int, manifest: Mapping[str, Any], vault: bool) -> None:
    """The memory's schema and tables with its manifest; ValidationError if the schema already exists.
    Runs inside the caller's transaction (the vault's keys are made in the same one)."""
    from psycopg import sql

    location = conn.location
    exists = conn.execute(
        "SELECT 1 FROM information_schema.schemata WHERE schema_name = %s", (location.schema,)
    ).fetchone()
    if exists:
        raise ValidationError(
            f"{location.display()} already exists; a memory is created in a new schema (pass ?schema=NAME)"
        )
    conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(location.schema)))
    for statement in _ddl(dim) + (VAULT_DDL if vault else []) + _touch_ddl(location.schema):
        conn.execute(statement)
    meta = {
        "generation": "0",
        "next_id": "0",
        "count": "0",  # entries, kept in each commit: count(*) over a million rows takes a second
        "format": str(FORMAT_VERSION),
        "manifest": json.dumps(dict(manifest), sort_keys=True),
        "rowset": f"{0:064x}",  # the row-set sum over no rows
    }
    with conn.raw.cursor() as cursor:
        cursor.executemany("INSERT INTO mem_meta (key, value) VALUES (%s, %s)", list(meta.items()))


def read_manifest_row(conn: ServerConnection) -> dict[str, Any]:
    """The manifest stored with the memory; StoreFormatError if the schema holds none (or a newer one)."""
    location = conn.location
    found = conn.execute(
        "SELECT 1 FROM information_schema.tables WHERE table_schema = %s AND table_name = 'mem_meta'",
        (location.schema,),
    ).fetchone()
    if not found:
        raise StoreFormatError(f"no rehearsal memory at {location.display()}")
    rows = dict(
        conn.execute("SELECT key, value FROM mem_meta WHERE key IN ('format', 'manifest')").fetchall()
    )
    try:
        version = int(rows.get("format", "0"))
    except ValueError:
        raise StoreFormatError(
            f"{location.display()} holds a damaged memory (its format is not a number)"
        ) from None
    if "manifest" not in rows or version < 1:
        raise StoreFormatError(f"{location.display()} holds a damaged memory (no manifest)")
    if version not in READABLE_FORMATS:
        raise StoreFormatError(
            f"{location.display()} has format version {version}; this rehearsal reads server memories of"
            f" formats {READABLE_FORMATS[0]} to {READABLE_FORMATS[-1]} only"
        )
    try:
        manifest = json.loads(rows["manifest"])
    except ValueError:
        manifest = None
    if not isinstance(manifest, dict):
        raise StoreFormatError(f"{location.display()} holds a damaged memory (its manifest is not JSON)")
    return manifest
