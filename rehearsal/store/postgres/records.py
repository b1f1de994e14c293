"""The PostgreSQL record store (see ``RecordStore``): entries, their metadata and vectors, generations.

INVARIANT: every id in ``entries`` has exactly one vector (its ``embedding``, in the clear: the server
searches it) and, unless the memory is embedding-only, exactly one ``vault_records`` row; ids are never
reused. The vector bytes the protocol hands in and out are the raw float32 rows (the vector index's
``seal`` is the identity here), so a vector index kept elsewhere (Milvus) can follow this store as the
FAISS index follows the SQLite one.

Generations as in SQLite: each committed mutation bumps ``generation`` by one inside its transaction;
``entries.added_gen`` and ``removed.gen`` let a reader at generation G catch up.

What it reads back it authenticates as the embedded store does (format 2, see
:mod:`rehearsal.store.authenticity`), because whoever administers the server can UPDATE its tables. Each
row's ``mac`` tags its id, tenant, task, label, tags, extra, source and generation (keyed by the store's
internal data key when it has keys), checked on every read that returns metadata, on every row a delete
removes (inside its transaction: a row that fails stops the delete, nothing removed) and, for the rows
inserted or updated since the handle last looked (by any connection: the ``touched`` marks of
:mod:`rehearsal.store.postgres.schema`), before a query that selects by metadata. Each write transaction
ends by tagging the commit record (generation, count, next id, the manifest's copy), checked when the memory
opens, when a write transaction starts (so a writer never re-tags an edited generation as its own) and
whenever the entry count is read. The vectors are not tagged: the server must read them in the clear to
search, and an edited vector changes a ranking, not a row.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import numpy as np

from rehearsal.errors import IntegrityError
from rehearsal.store.authenticity import CatalogAuthenticator
from rehearsal.store.postgres.connection import ServerConnection, mapped, server_errors
from rehearsal.store.postgres.schema import has_touch
from rehearsal.store.postgres.where import compile_where
from rehearsal.store.protocols import VectorRow
from rehearsal.store.types import EntryRow
from rehearsal.store.where import Where

__all__ = ["ServerRecords"]

_COLUMNS = "id, tenant, task, label_int, label_text, tags, extra, source, added_gen, mac"
_GROUP_COLUMNS = {"tenant": "tenant", "task": "task", "label": "COALESCE(label_int::text, label_text)"}
_COPY_TYPES = [
    *("int8", "text", "text", "int8", "text", "text[]", "text", "text", "vector", "int8", "float8", "bytea")
]
_BATCH = 10_000  # rows per round trip when streaming the whole table


def _tagged(values: Sequence[Any]) -> tuple[Any, ...]:
    """A selected row (``_COLUMNS``) as the eight values its tag covers, the same as the embedded store's
    (the label one int or name; tags and extra as JSON text), then the tag."""
    label_int, label_text, tags = values[3], values[4], values[5]
    # Both label columns set never comes from an insert: a tuple that no tag was made over.
    label = label_int if label_text is None else label_text if label_int is None else (label_int, label_text)
    tags_json = json.dumps(list(tags)) if isinstance(tags, list) else None
    mac = bytes(values[9]) if isinstance(values[9], bytes | memoryview) else values[9]
    return (values[0], values[1], values[2], label, tags_json, values[6], values[7], values[8], mac)


def _row(values: Sequence[Any]) -> EntryRow:
    label = values[3] if values[3] is not None else values[4]
    return EntryRow(
        id=int(values[0]),
        tenant=values[1],
        task=values[2],
        label=label,
        tags=tuple(values[5]),
        extra=json.loads(values[6]),
        source=values[7],
    )


class ServerRecords:
    """The record store on one server connection, shared with the memory's text store and vector index."""

    def __init__(self, conn: ServerConnection, dim: int, auth: CatalogAuthenticator) -> None:
        self.conn = conn
        self.dim = dim
        self.auth = auth
        self._writing = False  # inside a write transaction opened here
        self._changed = False  # ... that changed what the commit record covers
        # Rows added up to this generation, and touched up to this mark, have had their tags checked by this
        # handle (see check_rows_since); None: the memory predates the marks (found out on first use).
        self._checked_generation = -1
        self._checked_mark = -1
        self._marks: bool | None = None

    # -- transactions ----------------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[None]:
        """A write transaction holding the writer row lock; durable at the server when it commits. It first
        authenticates the commit record it builds on, and one that changed the generation, the ids or the
        entries ends by tagging the new one."""
        if self._writing or self.conn.in_transaction():
            with self.conn.write():
                yield
            return
        with self.conn.write():
            self._writing, self._changed = True, False
            try:
                self.check_commit(count_rows=False)
                yield
                if self._changed:
                    with server_errors("committing to the memory"):
                        self.seal_commit()
            finally:
                self._writing, self._changed = False, False

    def seal_commit(self) -> None:
        """Tag the committed state as it stands in this transaction (a new memory's, or a commit's)."""
        meta = self._meta()
        generation, count, next_id = int(meta["generation"]), int(meta["count"]), int(meta["next_id"])
        self.set_meta("commit", self.auth.commit_tag(generation, count, next_id, str(meta["manifest"])))

    def _meta(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in self.conn.execute("SELECT key, value FROM mem_meta").fetchall()}

    @mapped("reading the memory")
    def check_commit(self, *, count_rows: bool) -> tuple[int, int, str]:
        """Authenticate the commit record -> (generation, entry count, the manifest's copy); with
        ``count_rows`` also count the rows. IntegrityError if the generation, count, next id or the
        manifest's copy were edited on the server."""
        with self.conn.snapshot():
            meta = self._meta()
            try:
                generation, count = int(meta["generation"]), int(meta["count"])
                next_id, manifest, tag = int(meta["next_id"]), meta["manifest"], meta["commit"]
            except (KeyError, ValueError):
                raise IntegrityError("the memory's commit record is missing or damaged") from None
            if not hmac.compare_digest(tag, self.auth.commit_tag(generation, count, next_id, manifest)):
                raise IntegrityError(
                    "the memory's commit record fails authentication: its generation, entry count, next id"
                    " or manifest were edited on the server, or they come from another memory"
                )
            if count_rows:
                rows = int(self.conn.execute("SELECT count(*) FROM entries").fetchone()[0])
                if rows != count:
                    raise IntegrityError(
                        f"the memory holds {rows} entries but its commit record says {count}"
                    )
        return generation, count, manifest

    def read_view(self) -> AbstractContextManager[None]:
        return self.conn.snapshot()

    @mapped("compacting the memory")
    def compact(self) -> None:
        """VACUUM the tables after a tenant was forgotten: its removed rows (vectors in the clear, texts
        under a destroyed key) stop being readable from the table files' dead tuples. Their bytes can
        still sit in free space, the WAL and backups until overwritten (see the README)."""
        if self.conn.read_only or self.conn.in_transaction():
            return  # VACUUM cannot run inside a transaction
        for table in ("entries", "removed", "vault_records") if self.has_vault() else ("entries", "removed"):
            self.conn.execute(f"VACUUM {table}")

    @mapped("reading the memory")
    def has_vault(self) -> bool:
        found = self.conn.execute(
            "SELECT 1 FROM information_schema.tables"
            " WHERE table_schema = %s AND table_name = 'vault_records'",
            (self.conn.location.schema,),
        ).fetchone()
        return found is not None

    def close(self) -> None:
        self.conn.close()

    # -- meta ------------------------------------------------------------------------------------
    @mapped("reading the memory")
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.conn.execute("SELECT value FROM mem_meta WHERE key = %s", (key,)).fetchone()
        return default if row is None else str(row[0])

    @mapped("committing to the memory")
    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute(
            "INSERT INTO mem_meta (key, value) VALUES (%s, %s)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    @property
    def generation(self) -> int:
        return int(self.get_meta("generation", "0") or 0)

    @mapped("committing to the memory")
    def bump_generation(self) -> int:
        row = self.conn.execute(
            "UPDATE mem_meta SET value = (value::bigint + 1)::text WHERE key = 'generation' RETURNING value"
        ).fetchone()
        self._changed = True
        return int(row[0])

    @mapped("committing to the memory")
    def allocate_ids(self, n: int) -> list[int]:
        row = self.conn.execute(
            "UPDATE mem_meta SET value = (value::bigint + %s)::text WHERE key = 'next_id' RETURNING value",
            (n,),
        ).fetchone()
        end = int(row[0])
        self._changed = True
        return list(range(end - n, end))

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
                    values = (
                        int(i),
                        str(owner),
                        None if task is None else str(task),
                        int(label) if isinstance(label, int) else None if label is None else str(label),
                        json.dumps([str(t) for t in tags]),
                        json.dumps(extra),
                        None if source is None else str(source),
                        int(generation),
                    )
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
                            self.auth.row_tag(values),
                        )
                    )
        self._count_by(len(ids))
        self._changed = True

    def _count_by(self, delta: int) -> None:
        self.conn.execute(
            "UPDATE mem_meta SET value = (value::bigint + %s)::text WHERE key = 'count'", (delta,)
        )

    @mapped("committing to the memory")
    def remove(self, ids: Sequence[int], *, generation: int) -> None:
        """Delete the entries, checking the tag of every row as the DELETE removes it: a row edited on the
        server (its tenant moved to the one being forgotten, say) stops the whole transaction, so erasure
        never acts on a row whose tag does not verify."""
        id_list = list(ids)
        gone = self.conn.execute(f"DELETE FROM entries WHERE id = ANY(%s) RETURNING {_COLUMNS}", (id_list,))
        removed = self.auth.check_rows(map(_tagged, gone.fetchall()))
        self._count_by(-removed)
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
        found = self.conn.execute(f"SELECT {_COLUMNS} FROM entries WHERE id = ANY(%s)", (list(ids),))
        return {row.id: row for row in map(self._checked, found.fetchall())}

    def _checked(self, values: Sequence[Any]) -> EntryRow:
        tagged = _tagged(values)
        self.auth.check_row(tagged[:8], tagged[8])
        return _row(values)

    def all_rows(self) -> Iterable[EntryRow]:
        return (self._checked(values) for values in self._stream(f"SELECT {_COLUMNS} FROM entries", ()))

    def check_rows_since(self) -> int:
        """Check the tags of the rows added since this handle last did (by any writer, on any node) -> how
        many were checked. Rows never change once written, so a query that selects by metadata on the
        server first runs this: a row whose tenant or label was edited out of a filter's reach is caught
        here rather than silently missed. (Every row a query returns is checked again as it is read.)"""
        with self.conn.snapshot():
            latest = self.generation
            if self._marks is None:
                self._marks = has_touch(self.conn)
            if self._marks:
                # Inserts and UPDATEs by any connection, an administrator's by hand included.
                mark = int(self.conn.execute("SELECT n FROM mem_touch").fetchone()[0])
                if mark == self._checked_mark:
                    return 0
                query, since = f"SELECT {_COLUMNS} FROM entries WHERE touched > %s", self._checked_mark
            else:
                mark = -1
                if latest == self._checked_generation:
                    return 0
                query, since = (
                    f"SELECT {_COLUMNS} FROM entries WHERE added_gen > %s",
                    self._checked_generation,
                )
            checked = self.auth.check_rows(map(_tagged, self._stream(query, (since,))))
        if not self._writing:  # a mark of this uncommitted transaction may yet be another writer's
            self._checked_generation, self._checked_mark = latest, mark
        return checked

    def vectors(self, *, min_gen_exclusive: int = -1) -> Iterable[VectorRow]:
        """(id, tenant, float32 bytes) of entries added after a generation, in id order; each row's tag is
        checked, so the tenant a vector index files a vector under is authenticated."""
        query = f"SELECT {_COLUMNS}, embedding FROM entries WHERE added_gen > %s"
        return map(self._vector_row, self._stream(query, (min_gen_exclusive,)))

    @mapped("reading the memory")
    def vectors_of(self, ids: Sequence[int]) -> list[VectorRow]:
        rows = self.conn.execute(
            f"SELECT {_COLUMNS}, embedding FROM entries WHERE id = ANY(%s) ORDER BY id", (list(ids),)
        ).fetchall()
        return [self._vector_row(values) for values in rows]

    def _vector_row(self, values: Sequence[Any]) -> VectorRow:
        tagged = _tagged(values)
        self.auth.check_row(tagged[:8], tagged[8])
        return int(values[0]), values[1], values[10].to_numpy().tobytes()

    def _stream(self, query: str, params: Sequence[Any]) -> Iterator[Sequence[Any]]:
        """Rows of ``query`` (a SELECT whose first column is ``id``) in id order, fetched in keyset pages so
        a million rows never sit in memory at once; errors surface as ours."""
        last = -1
        where = " AND " if " WHERE " in query else " WHERE "
        page = f"{query}{where}id > %s ORDER BY id LIMIT {_BATCH}"
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
    def count(self) -> int:
        """The entries as the commit record counts them (authenticated; inside a write transaction, the
        count it is building)."""
        if self._writing:
            return int(self.get_meta("count", "0") or 0)
        return self.check_commit(count_rows=False)[1]

    @mapped("reading the memory")
    def counts_by(self, column: str) -> dict[str, int]:
        if column not in _GROUP_COLUMNS:
            raise ValueError(column)
        self.check_rows_since()
        query = f"SELECT {_GROUP_COLUMNS[column]}, count(*) FROM entries GROUP BY 1"
        return {str(k): int(n) for k, n in self.conn.execute(query).fetchall()}
