"""Generation seals: one tag over all the catalog rows a generation added, so a handle checks a million
rows' metadata in SQLite's C code instead of row by row in Python.

Each row keeps its own tag (:mod:`rehearsal.store.authenticity`); that is what a point read checks and
what decides in the end. A seal is a shortcut for the bulk check a handle makes before its first
metadata-selecting query: SQLite renders each row of a generation as ``json_array`` of its eight tagged
values, in id order, and the seal is the store's keyed tag of the generation number and that text. A
generation whose rendering matches its seal holds exactly the rows its last writer sealed, unedited; one
whose does not (an edited, added or moved row, a seal deleted or copied in, another SQLite that renders a
value differently) is checked row by row, which names the row or, where only the seal was damaged, passes.
A seal can therefore make a check faster but never weaker.

A writer keeps the seals in the transaction that changes a generation's rows: before it adds to or
removes from a generation it checks that generation as it stands (so a tampered row is not sealed in
afterwards), and before COMMIT it seals it again (or drops the seal of a generation left empty).
"""

from __future__ import annotations

import hmac
import sqlite3
from collections.abc import Iterable, Iterator
from typing import Any

from rehearsal.errors import IntegrityError
from rehearsal.store.authenticity import CatalogAuthenticator
from rehearsal.store.sqlite.connection import chunked

__all__ = ["SEALS_TABLE", "GenerationSeals"]

SEALS_TABLE = "gen_seals"
_COLUMNS = "id, tenant, task, label, tags, extra, source, added_gen, mac"
# The ORDER BY in the subquery keeps SQLite from flattening it into the aggregate, so each group's rows
# are concatenated in id order (SQLite walks the added_gen index, whose entries end with the rowid). An
# order that ever differs only fails the seal, and the rows are then checked one by one.
_RENDER = (
    "SELECT g, CAST(group_concat(r, '') AS BLOB) FROM ("
    " SELECT added_gen AS g, json_array(id, tenant, task, label, tags, extra, source, added_gen) AS r"
    " FROM entries{where} ORDER BY added_gen, id"
    ") GROUP BY g"
)


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

    def create_table(self) -> None:
        self.conn.execute(f"CREATE TABLE IF NOT EXISTS {SEALS_TABLE} (gen INTEGER PRIMARY KEY, tag BLOB)")

    def _tag(self, generation: int, rendered: bytes) -> bytes:
        return self.auth.tag(b"gen-seal", generation.to_bytes(8, "big", signed=True) + rendered)

    def _stored(self, since: int | None) -> dict[int, bytes]:
        if not self.exists():
            return {}
        query = f"SELECT gen, tag FROM {SEALS_TABLE}" + ("" if since is None else " WHERE gen > ?")
        return {
            g: t
            for g, t in self.conn.execute(query, () if since is None else (since,))
            if isinstance(g, int) and isinstance(t, bytes)
        }

    def _render(self, where: str, params: Iterable[Any]) -> Iterator[tuple[Any, bytes | None]]:
        return iter(self.conn.execute(_RENDER.format(where=where), list(params)).fetchall())

    def check(self, since: int | None) -> int:
        """Check the rows added after generation ``since`` (None: every row, whatever its generation
        column holds) -> how many rows had to be checked one by one. IntegrityError naming a row that
        fails its own tag."""
        seals = self._stored(since)
        where, params = ("", []) if since is None else (" WHERE added_gen > ?", [since])
        try:
            groups = self._render(where, params) if seals else None
        except sqlite3.Error:
            groups = None  # a value json_array refuses (a blob): the row-by-row check names the row
        if groups is None:
            query = f"SELECT {_COLUMNS} FROM entries{where}"
            return self.auth.check_rows(self.conn.execute(query, params))
        by_row = 0
        for generation, rendered in groups:
            if not self._sealed(seals, generation, rendered):
                by_row += self.check_rows_of(generation)
        return by_row

    def _sealed(self, seals: dict[int, bytes], generation: Any, rendered: bytes | None) -> bool:
        tag = seals.get(generation) if isinstance(generation, int) else None
        if tag is None or not isinstance(rendered, bytes):
            return False
        return hmac.compare_digest(self._tag(generation, rendered), tag)

    def check_rows_of(self, generation: Any) -> int:
        """Check every row of one generation value by its own tag -> how many (IS: also a NULL group)."""
        query = f"SELECT {_COLUMNS} FROM entries WHERE added_gen IS ?"
        return self.auth.check_rows(self.conn.execute(query, (generation,)))

    def check_generations(self, generations: Iterable[int]) -> None:
        """Check the rows of these generations as they stand (a writer, before it changes them)."""
        gens = sorted(set(generations))
        for chunk in chunked(gens):
            marks = ",".join("?" * len(chunk))
            query = f"SELECT gen, tag FROM {SEALS_TABLE} WHERE gen IN ({marks})"
            seals = {g: t for g, t in self.conn.execute(query, chunk) if isinstance(t, bytes)}
            try:
                groups = list(self._render(f" WHERE added_gen IN ({marks})", chunk))
            except sqlite3.Error:
                groups = [(g, None) for g in chunk]
            for generation, rendered in groups:
                if not self._sealed(seals, generation, rendered):
                    self.check_rows_of(generation)

    def reseal(self, generations: Iterable[int]) -> None:
        """Seal these generations as they stand now, in the writer's open transaction (checked by
        :meth:`check_generations` before this transaction changed them); drop the seals of empty ones."""
        gens = sorted(set(generations))
        for chunk in chunked(gens):
            marks = ",".join("?" * len(chunk))
            rendered = dict(self._render(f" WHERE added_gen IN ({marks})", chunk))
            for generation in chunk:
                text = rendered.get(generation)
                if text is None:
                    self.conn.execute(f"DELETE FROM {SEALS_TABLE} WHERE gen = ?", (generation,))
                else:
                    self.conn.execute(
                        f"INSERT OR REPLACE INTO {SEALS_TABLE}(gen, tag) VALUES (?, ?)",
                        (generation, self._tag(generation, text)),
                    )

    def seal_unsealed(self) -> int:
        """Create the table and seal every generation that has rows but no seal, after checking its rows
        one by one (a store written before seals, on a writer's first open) -> how many were sealed."""
        self.create_table()
        query = (
            f"SELECT DISTINCT added_gen FROM entries WHERE added_gen NOT IN (SELECT gen FROM {SEALS_TABLE})"
        )
        unsealed = [g for (g,) in self.conn.execute(query).fetchall()]
        for generation in unsealed:
            if not isinstance(generation, int):
                self.check_rows_of(generation)  # not a generation a writer made: names the row
                raise IntegrityError(f"catalog rows carry a generation of type {type(generation).__name__}")
            self.check_rows_of(generation)
        self.reseal(g for g in unsealed)
        return len(unsealed)
