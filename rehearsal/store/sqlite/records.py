"""The catalog: the SQLite record store (see ``RecordStore``), a memory's durable record of entries, their
metadata and sealed vectors.

INVARIANT: every id in ``entries`` has exactly one vector (sealed in encrypted stores) and, unless the
store is embedding-only, exactly one vault record with the same id; ids are never reused.

Generations order mutations: each committed add/delete/forget bumps ``generation`` by one. An entry
remembers the generation that added it and ``removed`` logs the generation that removed an id, so a
reader holding an index snapshot at generation G catches up by replaying rows with a later generation.

Format 2 authenticates what is read back (see :mod:`rehearsal.store.authenticity`): each row's ``mac``
covers its metadata and generation, and checked on every read that returns metadata (``rows``,
``all_rows``, ``group_ids``); each transaction that changes the generation ends by writing a commit record
(generation, entry count, next id, the manifest's copy, a fresh random nonce) under the same key, checked
on open, and after it commits the head file (:mod:`rehearsal.store.sqlite.head`) that tells a lost WAL
tail, or another copy's database, apart. The
bulk check of every row before a handle's first metadata-selecting query verifies one seal per generation
(:mod:`rehearsal.store.sqlite.seals`), which the same transaction keeps current.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from rehearsal.errors import IntegrityError, StoreFormatError
from rehearsal.store.authenticity import CatalogAuthenticator
from rehearsal.store.sqlite.connection import chunked, transaction
from rehearsal.store.sqlite.head import HEAD_FILE, GenerationHead
from rehearsal.store.sqlite.seals import SEALS_SCHEMA, GenerationSeals
from rehearsal.store.sqlite.where import compile_where
from rehearsal.store.types import EntryRow
from rehearsal.store.where import Where

__all__ = ["SqliteRecords"]

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
    created_at REAL NOT NULL,
    mac BLOB
);
CREATE INDEX IF NOT EXISTS entries_added_gen ON entries(added_gen);
CREATE INDEX IF NOT EXISTS entries_tenant ON entries(tenant);
CREATE INDEX IF NOT EXISTS entries_task ON entries(task);
CREATE TABLE IF NOT EXISTS removed (id INTEGER PRIMARY KEY, gen INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS removed_gen ON removed(gen);
"""

log = logging.getLogger(__name__)

_COLUMNS = "id, tenant, task, label, tags, extra, source, added_gen, mac"
FORMAT = 2


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


class SqliteRecords:
    """The record store on one SQLite connection; it shares the connection (and so its transactions) with
    the text store of the same database, so a commit covers records and texts together."""

    def __init__(
        self, conn: sqlite3.Connection, auth: CatalogAuthenticator, head: GenerationHead | None
    ) -> None:
        """``auth`` tags rows and commit records; ``head`` is the folder's head file (a reader only reads it:
        it never runs a write transaction), None for a catalog kept without one."""
        self.conn = conn
        self.auth = auth
        self.head = head
        self._changed = False  # the open transaction changed what the commit record covers
        self._delta = 0  # entries inserted minus entries removed in the open transaction
        # Rows added up to this generation have had their tags checked by this handle. A writer never
        # changes a row once written, so a query that selects by metadata in SQL (filters, groups, a
        # tenant's ids) first checks the rows added since: a row edited out of a filter's reach is caught
        # there, not missed. The bulk check runs on the generation seals (rehearsal.store.sqlite.seals).
        self._checked_generation = -1
        # SQLite's count of commits by other connections when this handle last checked: one that moved it
        # without moving the generation changed rows behind the writer's back (or was a rare text-only
        # commit), so the next check covers every row again.
        self._data_version = -1
        self._nonce: str | None = None  # the authenticated commit record's (see check_commit)
        self.seals = GenerationSeals(conn, auth)
        self._touched: set[int] = set()  # generations the open transaction adds to or removes from

    # -- transactions ----------------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT with full fsync (joins a transaction already open). One that changed
        the generation writes the commit record before COMMIT and the head file after it."""
        if self.conn.in_transaction:
            yield
            return
        self._changed, self._delta, self._touched = False, 0, set()
        try:
            with transaction(self.conn):
                yield
                if self._changed:
                    committed = self._seal_commit()
            if self._changed and self.head is not None:
                try:
                    self.head.write(*committed)
                except OSError as exc:
                    # The commit is durable and the caller must hear so (and the index must follow it):
                    # a head left behind the database only weakens the check of a lost tail, never fails it.
                    log.warning("could not record generation %d in %s: %s", committed[0], HEAD_FILE, exc)
        finally:
            self._changed, self._delta, self._touched = False, 0, set()

    def _seal_commit(self) -> tuple[int, int, str]:
        generation, next_id = self.generation, int(self.get_meta("next_id", "0") or 0)
        count = int(self.get_meta("count", "0") or 0) + self._delta
        manifest = self.get_meta("manifest", "") or ""
        if self._touched and self.seals.exists():
            self.seals.reseal(self._touched)
        nonce = secrets.token_hex(8)  # this commit's own: tells copies of the store apart (see head.py)
        self.set_meta("count", str(count))
        self.set_meta("nonce", nonce)
        self.set_meta("commit", self.auth.commit_tag(generation, count, next_id, manifest, nonce))
        return generation, count, nonce

    def mark_changed(self) -> None:
        """Make the open transaction write a commit record (a migration, which moves no generation)."""
        self._changed = True

    def check_commit(self, *, count_rows: bool = True) -> tuple[int, int]:
        """Authenticate the commit record -> (generation, entry count); with ``count_rows`` also count the
        rows. IntegrityError if the generation, count, next id or the manifest's copy were altered."""
        with self.read_view():
            meta = dict(self.conn.execute("SELECT key, value FROM mem_meta").fetchall())
            try:
                generation, count = int(meta["generation"]), int(meta["count"])
                next_id, manifest, tag = int(meta["next_id"]), str(meta["manifest"]), str(meta["commit"])
            except (KeyError, ValueError):
                raise IntegrityError("the catalog's commit record is missing or damaged") from None
            self._nonce = meta.get("nonce")  # None in a commit record made before nonces
            expected = self.auth.commit_tag(generation, count, next_id, manifest, self._nonce)
            if not hmac.compare_digest(tag, expected):
                raise IntegrityError(
                    "the catalog's commit record fails authentication: its generation, entry count or"
                    " manifest were altered, or the database comes from another store"
                )
            if count_rows and self.count() != count:
                raise IntegrityError(
                    f"the catalog holds {self.count()} entries but its commit record says {count}"
                )
        return generation, count

    def check_head(self) -> None:
        """IntegrityError if the head file recorded a commit this database does not hold. The head is read
        before the database: it is written only after a commit, so it can never be ahead legitimately."""
        if self.head is None:
            return
        head = self.head.read()
        generation, count = self.check_commit(count_rows=True)
        if generation < head.generation or (generation == head.generation and count != head.entries):
            raise IntegrityError(
                f"the database is at generation {generation} but {self.head.path.name} recorded generation"
                f" {head.generation}: committed transactions are missing (a lost WAL tail or a database"
                " file put back from an older copy)"
            )
        if generation == head.generation and head.nonce is not None and head.nonce != self._nonce:
            raise IntegrityError(
                f"the database's commit at generation {generation} is not the one {self.head.path.name}"
                " recorded: the database comes from another copy of this store (another folder's)"
            )

    def upgrade_head(self) -> None:
        """A writer's open: rewrite a head file of the format before nonces (once it checked out)."""
        if self.head is not None and self.head.is_old():
            generation, count = self.check_commit(count_rows=False)
            self.head.create(generation, count, self._nonce)

    @property
    def format(self) -> int:
        """1 for a catalog written before rows were authenticated (no ``format`` key), else its format."""
        return int(self.get_meta("format", "1") or 1)

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

    def create_schema(self, manifest: str) -> None:
        """The tables of a new catalog at generation 0, with the manifest's copy and the commit record."""
        self.conn.executescript(_SCHEMA)
        self.conn.execute(SEALS_SCHEMA)
        with self.transaction():
            meta = {"generation": "0", "next_id": "0", "count": "0", "format": str(FORMAT)}
            self.conn.executemany("INSERT INTO mem_meta(key, value) VALUES (?, ?)", list(meta.items()))
            self.set_meta("manifest", manifest)
            nonce = self._seal_commit()[2]
        if self.head is not None:
            self.head.create(0, 0, nonce)

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
        self._changed = True
        return gen

    def allocate_ids(self, n: int) -> list[int]:
        start = int(self.get_meta("next_id", "0") or 0)
        self.set_meta("next_id", str(start + n))
        self._changed = True
        return list(range(start, start + n))

    # -- entries ---------------------------------------------------------------------------------
    def insert(
        self,
        ids: Sequence[int],
        *,
        tenant: str | Sequence[str],
        metadata: Sequence[Mapping[str, Any]],
        sources: Sequence[str | None],
        vectors: Sequence[bytes],
        generation: int,
    ) -> None:
        now = time.time()
        rows = []
        owners = [tenant] * len(ids) if isinstance(tenant, str) else list(tenant)
        for i, owner, meta, source, vector in zip(ids, owners, metadata, sources, vectors, strict=True):
            extra = {k: v for k, v in meta.items() if k not in ("task", "label", "tags")}
            task, label = meta.get("task"), meta.get("label")
            values = (
                int(i),
                str(owner),
                None if task is None else str(task),  # plain types: the tag encodes what SQLite returns
                int(label) if isinstance(label, int) else None if label is None else str(label),
                json.dumps(list(meta.get("tags", ()))),
                json.dumps(extra),
                None if source is None else str(source),
                int(generation),
            )
            rows.append((*values, vector, now, self.auth.row_tag(values)))
        self._touch([int(generation)])
        self.conn.executemany(
            "INSERT INTO entries(id, tenant, task, label, tags, extra, source, added_gen, vector, created_at,"
            " mac) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        self._delta += len(rows)
        self._changed = True

    def remove(self, ids: Sequence[int], *, generation: int) -> None:
        for chunk in chunked(ids):
            marks = ",".join("?" * len(chunk))
            gens = self.conn.execute(f"SELECT DISTINCT added_gen FROM entries WHERE id IN ({marks})", chunk)
            self._touch(g for (g,) in gens.fetchall())
            self._delta -= self.conn.execute(
                f"DELETE FROM entries WHERE id IN ({marks})", list(chunk)
            ).rowcount
        self._changed = True
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
                row = self._checked(values)
                out[row.id] = row
        return out

    def _checked(self, values: Sequence[Any]) -> EntryRow:
        self.auth.check_row(values[:8], values[8])
        return _row(values)

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

    def _touch(self, generations: Iterable[int]) -> None:
        """Before the open transaction changes these generations' rows: check them as they stand, so the
        seal made at COMMIT does not take in a row edited behind the writer's back."""
        new = set(generations) - self._touched
        if new and self.seals.exists():
            self.seals.check_generations(new)
        self._touched |= new

    def check_rows_since(self) -> int:
        """Check the rows added since this handle last did (all of them the first time, or after a commit
        by another connection that moved no generation) -> how many had to be checked one by one."""
        with self.read_view():
            latest = self.generation
            version = int(self.conn.execute("PRAGMA data_version").fetchone()[0])
            if version == self._data_version and latest == self._checked_generation:
                return 0
            full = self._checked_generation < 0 or latest == self._checked_generation
            checked = self.seals.check(None if full else self._checked_generation)
        self._checked_generation, self._data_version = latest, version
        return checked

    def upgrade_seals(self) -> int:
        """A writer's open of a store written before generation seals: check its rows one by one once and
        seal every generation -> how many were sealed (0 when the store has its seals)."""
        if self.seals.exists():
            return 0
        with self.transaction():
            return self.seals.seal_unsealed()

    def matching_ids(self, where: Where | None, *, max_gen: int | None = None) -> list[int]:
        self.check_rows_since()
        clause, params = compile_where(where)
        if max_gen is not None:
            clause = f"({clause}) AND added_gen <= ?"
            params = [*params, max_gen]
        return [r[0] for r in self.conn.execute(f"SELECT id FROM entries WHERE {clause}", params)]

    def group_ids(self, column: str, where: Where | None, *, max_gen: int) -> dict[Any, list[int]]:
        if column not in ("tenant", "task", "label"):
            raise ValueError(column)
        self.check_rows_since()
        clause, params = compile_where(where)
        groups: dict[Any, list[int]] = {}
        query = f"SELECT {column}, id FROM entries WHERE ({clause}) AND added_gen <= ? ORDER BY id"
        for key, entry_id in self.conn.execute(query, [*params, max_gen]):
            groups.setdefault(key, []).append(entry_id)
        return groups

    def ids_of_tenant(self, tenant: str) -> list[int]:
        self.check_rows_since()  # a forget must not miss a row whose tenant was edited away
        return [r[0] for r in self.conn.execute("SELECT id FROM entries WHERE tenant = ?", (tenant,))]

    def ids_by_key(self, field: str, values: Sequence[Any], *, tenant: str) -> list[int]:
        # The field is a checked identifier (RehearsalMemory.upsert), bound as a JSON path parameter.
        self.check_rows_since()
        found: list[int] = []
        for start in range(0, len(values), 500):
            chunk = list(values[start : start + 500])
            marks = ",".join("?" * len(chunk))
            query = f"SELECT id FROM entries WHERE tenant = ? AND json_extract(extra, ?) IN ({marks})"
            found += [r[0] for r in self.conn.execute(query, [tenant, f'$."{field}"', *chunk])]
        return sorted(found)

    def all_rows(self) -> Iterable[EntryRow]:
        for values in self.conn.execute(f"SELECT {_COLUMNS} FROM entries ORDER BY id"):
            yield self._checked(values)

    def count(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0])

    def counts_by(self, column: str) -> dict[str, int]:
        if column not in ("tenant", "task", "label"):
            raise ValueError(column)
        self.check_rows_since()
        query = f"SELECT {column}, COUNT(*) FROM entries GROUP BY {column}"
        return {str(k): int(n) for k, n in self.conn.execute(query)}
