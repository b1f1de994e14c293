"""The PostgreSQL record store (see ``RecordStore``): entries, their metadata and vectors, generations.

INVARIANT: every id in ``entries`` has exactly one vector (its ``embedding``, in the clear: the server
searches it) and, unless the memory is embedding-only, exactly one ``vault_records`` row; ids are never
reused. The vector bytes the protocol hands in and out are the raw float32 rows (the vector index's
``seal`` is the identity here), so a vector index kept elsewhere (Milvus) can follow this store as the
FAISS index follows the SQLite one.

Generations as in SQLite: each committed mutation bumps ``generation`` by one inside its transaction;
``entries.added_gen`` and ``removed.gen`` let a reader at generation G catch up.

What it reads back it authenticates as the embedded store does (see :mod:`rehearsal.store.authenticity`),
because whoever administers the server can UPDATE its tables. Each row's ``mac`` tags its id, tenant,
task, label, tags, extra, source and generation and, since format 3, the digest of its vector
(:mod:`rehearsal.store.postgres.tags`; keyed by the store's internal data key when it has keys), checked on
every read that returns metadata, on every row a delete removes (inside its transaction: a row that fails
stops the delete, nothing removed) and, for the rows inserted or updated since the handle last looked (by
any connection: the ``touched`` marks of :mod:`rehearsal.store.postgres.schema`), before a query that
selects by metadata or returns rows. Each write transaction ends by tagging the commit record (generation,
count, next id, the manifest's copy and, since format 3, the row-set sum of
:mod:`rehearsal.store.postgres.rowset`), checked when the memory opens, when a write transaction starts (so
a writer never re-tags an edited generation as its own), whenever the entry count is read and whenever the
change counter has moved, when the table's rows are also compared with the sealed row set: a row deleted on
the server is noticed then.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from rehearsal.errors import IntegrityError
from rehearsal.store.authenticity import CatalogAuthenticator
from rehearsal.store.postgres.committed import CommittedState
from rehearsal.store.postgres.connection import ServerConnection, mapped, server_errors
from rehearsal.store.postgres.rowset import Tally, check_rowset, shifted
from rehearsal.store.postgres.tags import COLUMNS as _COLUMNS
from rehearsal.store.postgres.tags import EMBEDDING_DIGEST, VECTOR_AT, entry_row, tagged, vector_digest
from rehearsal.store.postgres.where import compile_where
from rehearsal.store.protocols import VectorRow
from rehearsal.store.types import EntryRow
from rehearsal.store.where import Where

__all__ = ["ServerRecords"]

_GROUP_COLUMNS = {"tenant": "tenant", "task": "task", "label": "COALESCE(label_int::text, label_text)"}
_COPY_TYPES = [
    *("int8", "text", "text", "int8", "text", "text[]", "text", "text", "vector", "int8", "float8", "bytea")
]
_BATCH = 10_000  # rows per round trip when streaming the whole table


class ServerRecords(CommittedState):
    """The record store on one server connection, shared with the memory's text store and vector index."""

    def __init__(self, conn: ServerConnection, dim: int, auth: CatalogAuthenticator) -> None:
        super().__init__(conn, auth)
        self.dim = dim
        # Rows added up to this generation have had their tags checked by this handle, in a memory made
        # before the touched marks (see check_rows_since).
        self._checked_generation = -1

    # -- entries ---------------------------------------------------------------------------------
    @mapped("committing to the memory")
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
        width = self.dim * 4
        added = 0  # the new rows' row-set elements
        with self.conn.raw.cursor() as cursor:
            copy_sql = (
                "COPY entries (id, tenant, task, label_int, label_text, tags, extra, source, embedding,"
                " added_gen, created_at, mac) FROM STDIN WITH (FORMAT BINARY)"
            )
            with cursor.copy(copy_sql) as copy:
                copy.set_types(_COPY_TYPES)
                owners = [tenant] * len(ids) if isinstance(tenant, str) else list(tenant)
                rows = zip(ids, owners, metadata, sources, vectors, strict=True)
                for i, owner, meta, source, vector in rows:
                    if len(vector) != width:
                        raise IntegrityError(
                            f"vector of record {i} has {len(vector)} bytes, expected {width}"
                        )
                    extra = {k: v for k, v in meta.items() if k not in ("task", "label", "tags")}
                    task, label, tags = meta.get("task"), meta.get("label"), meta.get("tags", ())
                    # Plain types, as the server hands them back: the tag covers what a read returns.
                    values: tuple[Any, ...] = (
                        int(i),
                        str(owner),
                        None if task is None else str(task),
                        int(label) if isinstance(label, int) else None if label is None else str(label),
                        json.dumps([str(t) for t in tags]),
                        json.dumps(extra),
                        None if source is None else str(source),
                        int(generation),
                    )
                    if self._format3:
                        values = (*values, vector_digest(vector))
                    mac = self.auth.row_tag(values)
                    added += self.auth.rowset_element(mac)
                    label_value = values[3]
                    copy.write_row(
                        (
                            *values[:3],
                            label_value if isinstance(label_value, int) else None,
                            label_value if isinstance(label_value, str) else None,
                            [str(t) for t in tags],
                            values[5],
                            values[6],
                            np.frombuffer(vector, dtype=np.float32),
                            values[7],
                            now,
                            mac,
                        )
                    )
        self._count_by(len(ids), added)
        self._changed = True

    def _count_by(self, delta: int, elements: int) -> None:
        """Move the entry count and (format 3) the row-set sum, inside the write transaction."""
        self.conn.execute(
            "UPDATE mem_meta SET value = (value::bigint + %s)::text WHERE key = 'count'", (delta,)
        )
        rowset = self.get_meta("rowset")
        if rowset is not None:
            self.set_meta("rowset", shifted(rowset, elements))

    def _check(self, rows: Iterable[Sequence[Any]]) -> int:
        """Check the tags of selected rows (``_COLUMNS``) as this memory's format makes them."""
        width = 9 if self._format3 else 8
        return self.auth.check_rows((tagged(v, with_vector=width == 9) for v in rows), values=width)

    @mapped("committing to the memory")
    def remove(self, ids: Sequence[int], *, generation: int) -> None:
        """Delete the entries, checking the tag of every row as the DELETE removes it: a row edited on the
        server (its tenant moved to the one being forgotten, say) stops the whole transaction, so erasure
        never acts on a row whose tag does not verify."""
        id_list = list(ids)
        gone = self.conn.execute(f"DELETE FROM entries WHERE id = ANY(%s) RETURNING {_COLUMNS}", (id_list,))
        tally = Tally(self.auth)
        removed = self._check(tally.passing(gone.fetchall()))
        self._count_by(-removed, -tally.total)
        self._changed = True
        self.conn.execute(
            "INSERT INTO removed (id, gen) SELECT unnest(%s::bigint[]), %s"
            " ON CONFLICT (id) DO UPDATE SET gen = excluded.gen",
            (id_list, generation),
        )

    @mapped("reading the memory")
    def existing(self, ids: Iterable[int]) -> set[int]:
        found = self.conn.execute("SELECT id FROM entries WHERE id = ANY(%s)", (list(ids),)).fetchall()
        return {int(r[0]) for r in found}

    @mapped("reading the memory")
    def rows(self, ids: Sequence[int]) -> dict[int, EntryRow]:
        """The rows of ``ids`` that exist, each checked; a row deleted on the server since this handle
        last looked is an IntegrityError (the row-set check), not an absence."""
        self.check_rowset_since()
        found = self.conn.execute(f"SELECT {_COLUMNS} FROM entries WHERE id = ANY(%s)", (list(ids),))
        return {row.id: row for row in map(self._checked, found.fetchall())}

    def _checked(self, values: Sequence[Any]) -> EntryRow:
        self._check([values])
        return entry_row(values)

    def all_rows(self) -> Iterable[EntryRow]:
        return (self._checked(values) for values in self.stream(f"SELECT {_COLUMNS} FROM entries", ()))

    def check_rows_since(self) -> int:
        """Check the tags of the rows inserted or updated since this handle last did (by any writer, on
        any node, or an administrator by hand) -> how many were checked; then :meth:`check_rowset_since`.
        A query that selects by metadata on the server first runs this: a row whose tenant or label was
        edited out of a filter's reach is caught here rather than silently missed. (Every row a query
        returns is checked again as it is read.)"""
        with self.conn.snapshot():
            mark = self._touch_mark()
            if mark is None:
                return self._check_added_since()
            if mark == self._checked_mark:
                self._check_rowset_at(mark)
                return 0
            sealed = self._sealed_rows()  # first: it says which tags this memory's rows carry
            rows = self.stream(f"SELECT {_COLUMNS} FROM entries WHERE touched > %s", (self._checked_mark,))
            # A handle's first look reads every row anyway (all are touched after -1): tally them on the way.
            tally = Tally(self.auth) if self._checked_mark < 0 else None
            checked = self._check(tally.passing(rows) if tally is not None else rows)
            self._check_rowset_at(mark, sealed, tally)
        if not self._writing:  # a mark of this uncommitted transaction may yet be another writer's
            self._checked_mark = mark
        return checked

    def check_rowset_since(self) -> None:
        """In format 3, IntegrityError unless the table still holds exactly the sealed row set (a row
        deleted on the server leaves no tag to fail), checked again only once the change counter moved."""
        with self.conn.snapshot():
            mark = self._touch_mark()
            if mark is not None:
                self._check_rowset_at(mark)

    def _check_rowset_at(
        self, mark: int, sealed: tuple[int, str | None] | None = None, tally: Tally | None = None
    ) -> None:
        if mark == self._rowset_mark:
            return
        count, rowset = sealed if sealed is not None else self._sealed_rows()
        if rowset is not None:
            check_rowset(self, count, rowset, tally)
        if not self._writing:
            self._rowset_mark = mark

    def _sealed_rows(self) -> tuple[int, str | None]:
        """(entry count, row-set sum) the table must match: inside this handle's write transaction the
        values it is building (authenticated when it started, changed since only by it), else the
        authenticated commit record's."""
        if self._writing:
            return int(self.get_meta("count", "0") or 0), self.get_meta("rowset")
        commit = self.check_commit(count_rows=False)
        return commit.entries, commit.rowset

    def _check_added_since(self) -> int:
        """For a memory made before the touched marks (read-only until a writer adds them): the rows added
        since this handle last looked."""
        latest = self.generation
        if latest == self._checked_generation:
            return 0
        query = f"SELECT {_COLUMNS} FROM entries WHERE added_gen > %s"
        checked = self._check(self.stream(query, (self._checked_generation,)))
        if not self._writing:
            self._checked_generation = latest
        return checked

    def vectors(self, *, min_gen_exclusive: int = -1) -> Iterable[VectorRow]:
        """(id, tenant, float32 bytes) of entries added after a generation, in id order; each row's tag is
        checked, so the tenant a vector index files a vector under is authenticated."""
        query = f"SELECT {_COLUMNS}, embedding FROM entries WHERE added_gen > %s"
        return map(self._vector_row, self.stream(query, (min_gen_exclusive,)))

    @mapped("reading the memory")
    def vectors_of(self, ids: Sequence[int]) -> list[VectorRow]:
        rows = self.conn.execute(
            f"SELECT {_COLUMNS}, embedding FROM entries WHERE id = ANY(%s) ORDER BY id", (list(ids),)
        ).fetchall()
        return [self._vector_row(values) for values in rows]

    def _vector_row(self, values: Sequence[Any]) -> VectorRow:
        self._check([values])
        return int(values[0]), values[1], values[VECTOR_AT].to_numpy().tobytes()

    def stream(self, query: str, params: Sequence[Any]) -> Iterator[Sequence[Any]]:
        """Rows of ``query`` (``SELECT ... FROM entries [WHERE ...]``, first column ``id``) in id order,
        fetched in keyset pages so a million rows never sit in memory at once; errors surface as ours."""
        last = -1
        columns, _, condition = query.partition(" FROM entries")
        condition = condition.removeprefix(" WHERE ") or "TRUE"
        page = f"{columns} FROM entries WHERE ({condition}) AND id > %s ORDER BY id LIMIT {_BATCH}"
        if EMBEDDING_DIGEST in columns:
            # The page's ids are chosen first: when the planner sorts, a vector's digest (~10 us a row) is
            # then computed for the page's rows only, not for every row after it (quadratic in pages).
            page = (
                f"{columns} FROM entries WHERE id IN (SELECT id FROM entries WHERE ({condition})"
                f" AND id > %s ORDER BY id LIMIT {_BATCH}) ORDER BY id"
            )
        while True:
            with server_errors("reading the memory"):
                batch = self.conn.execute(page, (*params, last)).fetchall()
            yield from batch
            if len(batch) < _BATCH:
                return
            last = int(batch[-1][0])

    @mapped("reading the memory")
    def changes_since(self, generation: int) -> tuple[list[int], list[int]]:
        with self.conn.snapshot():
            added = self.conn.execute(
                "SELECT id FROM entries WHERE added_gen > %s ORDER BY id", (generation,)
            ).fetchall()
            return [int(r[0]) for r in added], self.removed_since(generation)

    @mapped("reading the memory")
    def removed_since(self, generation: int) -> list[int]:
        rows = self.conn.execute("SELECT id FROM removed WHERE gen > %s ORDER BY id", (generation,))
        return [int(r[0]) for r in rows.fetchall()]

    @mapped("reading the memory")
    def added_count_since(self, generation: int) -> int:
        row = self.conn.execute("SELECT count(*) FROM entries WHERE added_gen > %s", (generation,)).fetchone()
        return int(row[0])

    @mapped("reading the memory")
    def matching_ids(self, where: Where | None, *, max_gen: int | None = None) -> list[int]:
        self.check_rows_since()
        clause, params = compile_where(where)
        if max_gen is not None:
            clause, params = f"({clause}) AND added_gen <= %s", [*params, max_gen]
        rows = self.conn.execute(f"SELECT id FROM entries WHERE {clause} ORDER BY id", params)
        return [int(r[0]) for r in rows.fetchall()]

    @mapped("reading the memory")
    def group_ids(self, column: str, where: Where | None, *, max_gen: int) -> dict[Any, list[int]]:
        if column not in _GROUP_COLUMNS:
            raise ValueError(column)
        self.check_rows_since()
        clause, params = compile_where(where)
        key = "label_int, label_text" if column == "label" else column
        query = f"SELECT {key}, id FROM entries WHERE ({clause}) AND added_gen <= %s ORDER BY id"
        groups: dict[Any, list[int]] = {}
        for row in self.conn.execute(query, [*params, max_gen]).fetchall():
            value = (row[0] if row[0] is not None else row[1]) if column == "label" else row[0]
            groups.setdefault(value, []).append(int(row[-1]))
        return groups

    @mapped("reading the memory")
    def ids_of_tenant(self, tenant: str) -> list[int]:
        self.check_rows_since()
        rows = self.conn.execute("SELECT id FROM entries WHERE tenant = %s ORDER BY id", (tenant,))
        return [int(r[0]) for r in rows.fetchall()]

    @mapped("reading the memory")
    def ids_by_key(self, field: str, values: Sequence[Any], *, tenant: str) -> list[int]:
        self.check_rows_since()
        from psycopg.types.json import Jsonb

        # jsonb equality keeps 5 and "5" apart, as SQLite's json_extract does.
        rows = self.conn.execute(
            "SELECT id FROM entries WHERE tenant = %s AND (extra::jsonb -> %s) = ANY(%s::jsonb[])"
            " ORDER BY id",
            (tenant, field, [Jsonb(v) for v in values]),
        )
        return [int(r[0]) for r in rows.fetchall()]

    @mapped("reading the memory")
    def counts_by(self, column: str) -> dict[str, int]:
        if column not in _GROUP_COLUMNS:
            raise ValueError(column)
        self.check_rows_since()
        query = f"SELECT {_GROUP_COLUMNS[column]}, count(*) FROM entries GROUP BY 1"
        return {str(k): int(n) for k, n in self.conn.execute(query).fetchall()}
