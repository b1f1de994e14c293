"""The committed state of a server memory: the writer's transaction, ``mem_meta``, the commit record
and the change marks a handle has checked up to (the part of :class:`ServerRecords` that is not about
entries).

Writers serialise on the generation row (see :mod:`rehearsal.store.postgres.connection`). A write
transaction first authenticates the commit record it builds on and, if it changed the generation, the ids,
the count or the row set, ends by tagging the new one. A handle remembers the change mark (``mem_touch``,
see :mod:`rehearsal.store.postgres.schema`) up to which it has checked the table; its own commit moves that
mark on without a recheck only when it took the very next mark, so that nobody else's change slips by.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import NamedTuple

from rehearsal.errors import IntegrityError
from rehearsal.store.authenticity import CatalogAuthenticator
from rehearsal.store.postgres.connection import ServerConnection, mapped, server_errors
from rehearsal.store.postgres.schema import has_touch

__all__ = ["Commit", "CommittedState"]


class Commit(NamedTuple):
    """The authenticated commit record."""

    generation: int
    entries: int
    manifest: str
    rowset: str | None  # the sealed row-set sum (hex) of a format-3 memory; None in format 2


class CommittedState:
    """The commit record and change marks of a memory on one server connection."""

    def __init__(self, conn: ServerConnection, auth: CatalogAuthenticator) -> None:
        self.conn = conn
        self.auth = auth
        self._writing = False  # inside a write transaction opened here
        self._changed = False  # ... that changed what the commit record covers
        # Rows touched up to this mark have had their tags (and the row set) checked by this handle (see
        # ServerRecords.check_rows_since); _marks None: not yet known whether the memory has the marks.
        self._checked_mark = -1
        self._rowset_mark = -1  # ... and the row set compared with the sealed one
        self._marks: bool | None = None
        # Whether rows are tagged over their vectors and the row set is sealed (format 3); None until the
        # commit record is first read. Once True it stays: a commit record without its row set is refused.
        self._format3: bool | None = None

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
        start = own = None
        with self.conn.write():
            self._writing, self._changed = True, False
            try:
                self.check_commit(count_rows=False)
                start = self._touch_mark()
                yield
                if self._changed:
                    with server_errors("committing to the memory"):
                        self.seal_commit()
                own = self._own_mark()
            finally:
                self._writing, self._changed = False, False
        # Committed. When this transaction took the very next mark after the one this handle last checked,
        # nobody else touched the table in between: it is what was checked plus this commit's own rows.
        if start is not None and own == start + 1:
            if start == self._checked_mark:
                self._checked_mark = own
            if start == self._rowset_mark:
                self._rowset_mark = own

    def mark_changed(self) -> None:
        """Have this write transaction end by sealing a new commit record (a migration's)."""
        self._changed = True

    def seal_commit(self) -> None:
        """Tag the committed state as it stands in this transaction (a new memory's, or a commit's)."""
        meta = self._meta()
        generation, count, next_id = int(meta["generation"]), int(meta["count"]), int(meta["next_id"])
        rowset = meta.get("rowset")
        tag = self.auth.commit_tag(generation, count, next_id, str(meta["manifest"]), rowset)
        self.set_meta("commit", tag)
        self._format3 = rowset is not None

    def _touch_mark(self) -> int | None:
        if self._marks is None:
            self._marks = has_touch(self.conn)
        return int(self.conn.execute("SELECT n FROM mem_touch").fetchone()[0]) if self._marks else None

    def _own_mark(self) -> int | None:
        """The change mark this transaction took (None if it inserted, updated and deleted no entry)."""
        found = self.conn.execute(
            "SELECT current_setting(%s, true)", (f"rehearsal_touch.{self.conn.location.schema}",)
        ).fetchone()
        return int(found[0]) if found and found[0] else None

    def _meta(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in self.conn.execute("SELECT key, value FROM mem_meta").fetchall()}

    @mapped("reading the memory")
    def check_commit(self, *, count_rows: bool) -> Commit:
        """Authenticate the commit record; with ``count_rows`` also count the rows. IntegrityError if the
        generation, count, next id, row-set sum or the manifest's copy were edited on the server."""
        with self.conn.snapshot():
            meta = self._meta()
            try:
                generation, count = int(meta["generation"]), int(meta["count"])
                next_id, manifest, tag = int(meta["next_id"]), meta["manifest"], meta["commit"]
                rowset = meta.get("rowset")
                if rowset is not None:
                    int(rowset, 16)
            except (KeyError, ValueError):
                raise IntegrityError("the memory's commit record is missing or damaged") from None
            expected = self.auth.commit_tag(generation, count, next_id, manifest, rowset)
            if not hmac.compare_digest(tag, expected):
                raise IntegrityError(
                    "the memory's commit record fails authentication: its generation, entry count, next id,"
                    " row set or manifest were edited on the server, or they come from another memory"
                )
            if rowset is None and self._format3:
                raise IntegrityError("the memory's commit record lost its sealed row set (format 3)")
            self._format3 = rowset is not None
            if count_rows:
                rows = int(self.conn.execute("SELECT count(*) FROM entries").fetchone()[0])
                if rows != count:
                    raise IntegrityError(
                        f"the memory holds {rows} entries but its commit record says {count}"
                    )
        return Commit(generation, count, manifest, rowset)

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

    @mapped("reading the memory")
    def count(self) -> int:
        """The entries as the commit record counts them (authenticated; inside a write transaction, the
        count it is building)."""
        if self._writing:
            return int(self.get_meta("count", "0") or 0)
        return self.check_commit(count_rows=False).entries
