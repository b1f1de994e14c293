"""The catalog: the SQLite record store (see ``RecordStore``), a memory's durable record of entries, their
metadata and sealed vectors.

INVARIANT: every id in ``entries`` has exactly one vector (sealed in encrypted stores) and, unless the
store is embedding-only, exactly one vault record with the same id; ids are never reused.

Generations order mutations: each committed add/delete/forget bumps ``generation`` by one. An entry
remembers the generation that added it and ``removed`` logs the generation that removed an id, so a
reader holding an index snapshot at generation G catches up by replaying rows with a later generation.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from rehearsal.errors import StoreFormatError
from rehearsal.store.sqlite.connection import chunked, transaction
from rehearsal.store.sqlite.where import compile_where
from rehearsal.store.types import EntryRow
from rehearsal.store.where import Where

__all__ = ["Catalog"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS mem_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    task TEXT,
    label,
    tags TEXT NOT NULL DEFAULT '[]',
    extra TEXT NOT NULL DEFAULT '{}',
    source TEXT,
    vector BLOB NOT NULL,
    added_gen INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_added_gen ON entries(added_gen);
CREATE INDEX IF NOT EXISTS entries_tenant ON entries(tenant);
CREATE INDEX IF NOT EXISTS entries_task ON entries(task);
CREATE TABLE IF NOT EXISTS removed (id INTEGER PRIMARY KEY, gen INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS removed_gen ON removed(gen);
"""

_COLUMNS = "id, tenant, task, label, tags, extra, source"


def _row(values: Sequence[Any]) -> EntryRow:
    return EntryRow(
        id=int(values[0]),
        tenant=values[1],
        task=values[2],
        label=values[3],
        tags=tuple(json.loads(values[4])),
        extra=json.loads(values[5]),
        source=values[6],
    )


class Catalog:
    """The record store on one SQLite connection; it shares the connection (and so its transactions) with
    the text store of the same database, so a commit covers records and texts together."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    # -- transactions ----------------------------------------------------------------------------
    def transaction(self) -> AbstractContextManager[None]:
        """BEGIN IMMEDIATE ... COMMIT with full fsync (joins a transaction already open)."""
        return transaction(self.conn)

    @contextmanager
    def read_view(self) -> Iterator[None]:
        """One read transaction, so several lookups see the same database snapshot."""
        if self.conn.in_transaction:
            yield
            return
        self.conn.execute("BEGIN")
        try:
            yield
        finally:
            self.conn.execute("COMMIT")

    def compact(self) -> None:
        """Copy the WAL into the database file and truncate it, so removed bytes do not linger there."""
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        self.conn.close()

    def create_schema(self, meta: Mapping[str, str]) -> None:
        self.conn.executescript(_SCHEMA)
        self.conn.executemany("INSERT INTO mem_meta(key, value) VALUES (?, ?)", list(meta.items()))

    def check_schema(self) -> None:
        tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not {"mem_meta", "entries", "removed"} <= tables:
            raise StoreFormatError("the database holds no rehearsal catalog")

    # -- meta ------------------------------------------------------------------------------------
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.conn.execute("SELECT value FROM mem_meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute(
            "INSERT INTO mem_meta(key, value) VALUES (?, ?)"
            " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    @property
    def generation(self) -> int:
        return int(self.get_meta("generation", "0") or 0)

    def bump_generation(self) -> int:
        gen = self.generation + 1
        self.set_meta("generation", str(gen))
        return gen

    def allocate_ids(self, n: int) -> list[int]:
        start = int(self.get_meta("next_id", "0") or 0)
        self.set_meta("next_id", str(start + n))
        return list(range(start, start + n))

    # -- entries ---------------------------------------------------------------------------------
    def insert(
        self,
        ids: Sequence[int],
        *,
        tenant: str,
        metadata: Sequence[Mapping[str, Any]],
        sources: Sequence[str | None],
        vectors: Sequence[bytes],
        generation: int,
    ) -> None:
        now = time.time()
        rows = []
        for i, meta, source, vector in zip(ids, metadata, sources, vectors, strict=True):
            extra = {k: v for k, v in meta.items() if k not in ("task", "label", "tags")}
            rows.append(
                (
                    i,
                    tenant,
                    meta.get("task"),
                    meta.get("label"),
                    json.dumps(list(meta.get("tags", ()))),
                    json.dumps(extra),
                    source,
                    vector,
                    generation,
                    now,
                )
            )
        self.conn.executemany(
            "INSERT INTO entries(id, tenant, task, label, tags, extra, source, vector, added_gen, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )

    def remove(self, ids: Sequence[int], *, generation: int) -> None:
        for chunk in chunked(ids):
            marks = ",".join("?" * len(chunk))
            self.conn.execute(f"DELETE FROM entries WHERE id IN ({marks})", list(chunk))
        self.conn.executemany(
            "INSERT OR REPLACE INTO removed(id, gen) VALUES (?, ?)", [(i, generation) for i in ids]
        )

    def existing(self, ids: Iterable[int]) -> set[int]:
        found: set[int] = set()
        id_list = list(ids)
        for chunk in chunked(id_list):
            marks = ",".join("?" * len(chunk))
            found.update(
                r[0] for r in self.conn.execute(f"SELECT id FROM entries WHERE id IN ({marks})", chunk)
            )
        return found

    def rows(self, ids: Sequence[int]) -> dict[int, EntryRow]:
        out: dict[int, EntryRow] = {}
        for chunk in chunked(ids):
            marks = ",".join("?" * len(chunk))
            for values in self.conn.execute(
                f"SELECT {_COLUMNS} FROM entries WHERE id IN ({marks})", list(chunk)
            ):
                row = _row(values)
                out[row.id] = row
        return out

    def vectors(self, *, min_gen_exclusive: int = -1) -> Iterable[tuple[int, str, bytes]]:
        """(id, tenant, vector blob) of entries added after a generation, in id order."""
        return self.conn.execute(
            "SELECT id, tenant, vector FROM entries WHERE added_gen > ? ORDER BY id", (min_gen_exclusive,)
        )

    def vectors_of(self, ids: Sequence[int]) -> list[tuple[int, str, bytes]]:
        out: list[tuple[int, str, bytes]] = []
        for chunk in chunked(ids):
            marks = ",".join("?" * len(chunk))
            out.extend(
                self.conn.execute(f"SELECT id, tenant, vector FROM entries WHERE id IN ({marks})", chunk)
            )
        return out

    def added_since(self, generation: int) -> list[int]:
        """Ids of the entries present now that were added after ``generation``, ascending."""
        query = "SELECT id FROM entries WHERE added_gen > ? ORDER BY id"
        return [r[0] for r in self.conn.execute(query, (generation,))]

    def changes_since(self, generation: int) -> tuple[list[int], list[int]]:
        with self.read_view():
            return self.added_since(generation), sorted(self.removed_since(generation))

    def added_count_since(self, generation: int) -> int:
        query = "SELECT COUNT(*) FROM entries WHERE added_gen > ?"
        return int(self.conn.execute(query, (generation,)).fetchone()[0])

    def removed_since(self, generation: int) -> list[int]:
        return [r[0] for r in self.conn.execute("SELECT id FROM removed WHERE gen > ?", (generation,))]

    def matching_ids(self, where: Where | None, *, max_gen: int | None = None) -> list[int]:
        clause, params = compile_where(where)
        if max_gen is not None:
            clause = f"({clause}) AND added_gen <= ?"
            params = [*params, max_gen]
        return [r[0] for r in self.conn.execute(f"SELECT id FROM entries WHERE {clause}", params)]

    def group_ids(self, column: str, where: Where | None, *, max_gen: int) -> dict[Any, list[int]]:
        if column not in ("tenant", "task", "label"):
            raise ValueError(column)
        clause, params = compile_where(where)
        groups: dict[Any, list[int]] = {}
        query = f"SELECT {column}, id FROM entries WHERE ({clause}) AND added_gen <= ? ORDER BY id"
        for key, entry_id in self.conn.execute(query, [*params, max_gen]):
            groups.setdefault(key, []).append(entry_id)
        return groups

    def ids_of_tenant(self, tenant: str) -> list[int]:
        return [r[0] for r in self.conn.execute("SELECT id FROM entries WHERE tenant = ?", (tenant,))]

    def ids_by_key(self, field: str, values: Sequence[Any], *, tenant: str) -> list[int]:
        # The field is a checked identifier (RehearsalMemory.upsert), bound as a JSON path parameter.
        found: list[int] = []
        for start in range(0, len(values), 500):
            chunk = list(values[start : start + 500])
            marks = ",".join("?" * len(chunk))
            query = f"SELECT id FROM entries WHERE tenant = ? AND json_extract(extra, ?) IN ({marks})"
            found += [r[0] for r in self.conn.execute(query, [tenant, f'$."{field}"', *chunk])]
        return sorted(found)

    def all_rows(self) -> Iterable[EntryRow]:
        for values in self.conn.execute(f"SELECT {_COLUMNS} FROM entries ORDER BY id"):
            yield _row(values)

    def count(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0])

    def counts_by(self, column: str) -> dict[str, int]:
        if column not in ("tenant", "task", "label"):
            raise ValueError(column)
        query = f"SELECT {column}, COUNT(*) FROM entries GROUP BY {column}"
        return {str(k): int(n) for k, n in self.conn.execute(query)}
