"""Generation seals: one tag over all the catalog rows a generation added, so a handle checks a million
rows' metadata in SQLite's C code instead of row by row in Python.

Each row keeps its own tag (:mod:`rehearsal.store.authenticity`); that is what a point read checks and
what decides in the end. A seal is a shortcut for the bulk check a handle makes before its first
metadata-selecting query: SQLite renders each row of a generation as ``json_array`` of its eight tagged
values, in id order, and the seal is the store's keyed tag of the generation number and that text. The
seal also keeps the lowest and highest id of the generation, so the rendering reads the table in rowid
order (twice as fast as through the generation index); they are hints, not trusted: a generation counts
as sealed only when the rows rendered from that id range match the tag and are as many as the rows the
generation index holds for it. One that does not (an edited, added or moved row, a seal deleted, edited or
copied in, another SQLite that renders a value differently) is checked row by row, which names the row or,
where only the seal was damaged, passes. A seal can therefore make a check faster but never weaker.

A writer keeps the seals in the transaction that changes a generation's rows: before it adds to or
removes from a generation it checks that generation as it stands (so a tampered row is not sealed in
afterwards), and before COMMIT it seals it again (or drops the seal of a generation left empty).
"""

from __future__ import annotations

import hmac
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from rehearsal.errors import IntegrityError
from rehearsal.store.authenticity import CatalogAuthenticator
from rehearsal.store.sqlite.connection import chunked

__all__ = ["SEALS_SCHEMA", "SEALS_TABLE", "GenerationSeals"]

SEALS_TABLE = "gen_seals"
SEALS_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {SEALS_TABLE} (gen INTEGER PRIMARY KEY, lo INTEGER, hi INTEGER, tag BLOB)"
)
_COLUMNS = "id, tenant, task, label, tags, extra, source, added_gen, mac"
# One generation's rows in id order, read by rowid range ("+added_gen" keeps SQLite off the generation
# index, whose lookups cost as much again as the rendering).
_RENDER = (
    "SELECT CAST(group_concat(r, '') AS BLOB), count(*) FROM ("
    " SELECT json_array(id, tenant, task, label, tags, extra, source, added_gen) AS r"
    " FROM entries WHERE id BETWEEN ? AND ? AND +added_gen = ? ORDER BY id)"
)

Seal = tuple[Any, Any, Any]  # lo, hi, tag as stored (checked before use)


class GenerationSeals:
    """The seals of one catalog, on its connection (the caller holds the read or write transaction)."""

    def __init__(self, conn: sqlite3.Connection, auth: CatalogAuthenticator) -> None:
        self.conn = conn
        self.auth = auth

    def exists(self) -> bool:
        """Whether the catalog has a seals table (a format-2 store written before seals has none until a
        writer opens it)."""
        query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
        return self.conn.execute(query, (SEALS_TABLE,)).fetchone() is not None

    def _tag(self, generation: int, rendered: bytes) -> bytes:
        return self.auth.tag(b"gen-seal", generation.to_bytes(8, "big", signed=True) + rendered)

    def _seals(self, where: str, params: Sequence[Any]) -> dict[Any, Seal]:
        if not self.exists():
            return {}
        query = f"SELECT gen, lo, hi, tag FROM {SEALS_TABLE}{where}"
        try:
            return {g: (lo, hi, tag) for g, lo, hi, tag in self.conn.execute(query, list(params))}
        except sqlite3.Error:
            return {}  # a table not of this shape: nothing is sealed

    def _counts(self, where: str, params: Sequence[Any]) -> dict[Any, int]:
        """Rows per generation value, from the generation index (no row is read)."""
        query = f"SELECT added_gen, count(*) FROM entries{where} GROUP BY added_gen"
        return dict(self.conn.execute(query, list(params)).fetchall())

    def _verified(self, generation: Any, count: int, seal: Seal | None) -> bool:
        """Whether the ``count`` rows the index holds for ``generation`` are exactly those its seal covers."""
        if seal is None or not isinstance(generation, int):
            return False
        lo, hi, tag = seal
        if not (isinstance(lo, int) and isinstance(hi, int) and isinstance(tag, bytes)):
            return False
        try:
            rendered, rendered_count = self.conn.execute(_RENDER, (lo, hi, generation)).fetchone()
        except sqlite3.Error:
            return False  # a value json_array refuses (a blob): the row-by-row check names the row
        if rendered_count != count or not isinstance(rendered, bytes):
            return False
        return hmac.compare_digest(self._tag(generation, rendered), tag)

    def check(self, since: int | None) -> int:
        """Check the rows added after generation ``since`` (None: every row, whatever its generation
        column holds) -> how many rows had to be checked one by one. IntegrityError naming a row that
        fails its own tag."""
        where, params = ("", []) if since is None else (" WHERE added_gen > ?", [since])
        seals = self._seals(" WHERE gen > ?", [-1 if since is None else since])
        by_row = 0
        for generation, count in self._counts(where, params).items():
            if not self._verified(generation, count, seals.get(generation)):
                by_row += self.check_rows_of(generation)
        return by_row

    def check_rows_of(self, generation: Any) -> int:
        """Check every row of one generation value by its own tag -> how many (IS: also a NULL group)."""
        query = f"SELECT {_COLUMNS} FROM entries WHERE added_gen IS ?"
        return self.auth.check_rows(self.conn.execute(query, (generation,)))

    def check_generations(self, generations: Iterable[Any]) -> None:
        """Check the rows of these generations as they stand (a writer, before it changes them)."""
        for chunk in chunked(sorted(set(generations), key=repr)):
            where = f" WHERE added_gen IN ({','.join('?' * len(chunk))})"
            seals = self._seals(where.replace("added_gen", "gen"), chunk)
            for generation, count in self._counts(where, chunk).items():
                if not self._verified(generation, count, seals.get(generation)):
                    self.check_rows_of(generation)

    def reseal(self, generations: Iterable[int]) -> None:
        """Seal these generations as they stand now, in the writer's open transaction (checked by
        :meth:`check_generations` before this transaction changed them); drop the seals of empty ones."""
        for generation in sorted(set(generations)):
            query = "SELECT min(id), max(id) FROM entries WHERE added_gen = ?"
            lo, hi = self.conn.execute(query, (generation,)).fetchone()
            if lo is None:
                self.conn.execute(f"DELETE FROM {SEALS_TABLE} WHERE gen = ?", (generation,))
                continue
            rendered = self.conn.execute(_RENDER, (lo, hi, generation)).fetchone()[0]
            self.conn.execute(
                f"INSERT OR REPLACE INTO {SEALS_TABLE}(gen, lo, hi, tag) VALUES (?, ?, ?, ?)",
                (generation, lo, hi, self._tag(generation, rendered)),
            )

    def seal_unsealed(self) -> int:
        """Create the table and seal every generation that has rows but no seal, after checking its rows
        one by one (a store written before seals, on a writer's first open) -> how many were sealed."""
        self.conn.execute(SEALS_SCHEMA)
        sealed = self._seals("", [])
        unsealed = [g for g in self._counts("", []) if g not in sealed]
        for generation in unsealed:
            self.check_rows_of(generation)  # a row of a generation no writer made fails here, named
            if not isinstance(generation, int):
                raise IntegrityError(f"catalog rows carry a generation of type {type(generation).__name__}")
        self.reseal(unsealed)
        return len(unsealed)
