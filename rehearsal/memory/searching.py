"""Reading a memory's stores for a query: the vector search with its filter, the texts of an encrypted
memory from its vault, and those of an embedding-only memory from its owner's resolver. The facade holds
the lock around them, and the read view (one database snapshot) around a search.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np

from rehearsal.errors import ConfigError, IntegrityError, ValidationError
from rehearsal.store.failures import storage_errors
from rehearsal.store.protocols import FilteringIndex, RecordStore, TextStore, VectorIndex
from rehearsal.store.types import Hit
from rehearsal.store.where import Where

__all__ = ["Resolver", "Searcher", "read_view", "resolve_texts", "vault_texts"]

Resolver = Callable[[list[str]], list[str | None]]
"""Embedding-only mode: maps source references to texts; ``None`` means erased upstream."""


class Searcher:
    """Top-k search over the vector index, filtered by the record store, with hits carrying metadata."""

    def __init__(self, records: RecordStore, vectors: VectorIndex) -> None:
        self._records = records
        self._vectors = vectors
        # The ids the last filter admitted, by (filter, generation): replay asks the same filter on every
        # training step, and listing a million matching ids costs seconds.
        self._filtered: tuple[tuple[Where, int], np.ndarray] | None = None

    def search(
        self, queries: np.ndarray, k: int, tree: Where | None, *, threads: int | None
    ) -> list[list[Hit]]:
        """``queries`` (n, dim), checked -> n lists of up to k hits, best first."""
        # More neighbours than entries cannot come back; asking for them would only allocate (n, k).
        k = min(k, max(1, len(self._vectors)))
        if isinstance(self._vectors, FilteringIndex):
            scores, ids = self._vectors.search_where(queries, k, tree, threads=threads)
            return self._hits(scores, ids)
        allowed = None
        if tree is not None:
            allowed = self._allowed_ids(tree)
            if len(allowed) == 0:
                return [[] for _ in range(len(queries))]
        scores, ids = self._vectors.search(queries, k, allowed_ids=allowed, threads=threads)
        return self._hits(scores, ids)

    def _hits(self, scores: np.ndarray, ids: np.ndarray) -> list[list[Hit]]:
        found = {int(i) for i in ids.ravel() if i >= 0}
        rows = self._records.rows(sorted(found))
        return [
            [
                Hit(int(i), float(s), rows[int(i)].metadata())
                for s, i in zip(srow, irow, strict=True)
                if int(i) in rows
            ]
            for srow, irow in zip(scores, ids, strict=True)
        ]

    def _allowed_ids(self, tree: Where) -> np.ndarray:
        """The ids ``tree`` admits at the current generation (sorted, unique); the same array object comes
        back while neither changes, so the index can keep its id selector too."""
        key = (tree, self._vectors.generation)
        if self._filtered is not None and self._filtered[0] == key:
            return self._filtered[1]
        matching = self._records.matching_ids(tree, max_gen=self._vectors.generation)
        allowed = np.unique(np.asarray(matching, dtype=np.int64))
        self._filtered = (key, allowed)
        return allowed


def resolve_texts(
    records: RecordStore, resolver: Resolver | None, ids: list[int]
) -> tuple[dict[int, str], list[int]]:
    """({id: text} for the ids the resolver still has, ids it reported erased upstream)."""
    if resolver is None:
        raise ConfigError("an embedding-only memory needs resolver= to turn sources into texts")
    rows = records.rows(ids)
    present = [i for i in ids if i in rows]
    if not present:
        return {}, []
    texts = resolver([str(rows[i].source) for i in present])
    if not isinstance(texts, list) or len(texts) != len(present):
        raise ValidationError(f"resolver must return a list of {len(present)} items (str or None)")
    erased = [i for i, t in zip(present, texts, strict=True) if t is None]
    return {i: t for i, t in zip(present, texts, strict=True) if t is not None}, erased


def vault_texts(records: RecordStore, texts: TextStore, ids: list[int]) -> dict[int, str]:
    """The texts that exist among ``ids`` in an encrypted memory's vault.

    The catalog rows are read (and so authenticated) too, in the same database snapshot as the texts: a
    text is handed out only for an entry whose row checks out, and an entry without its text is a damaged
    vault (INVARIANT: a text for every entry), not a miss.
    """
    with records.read_view():
        rows = records.rows(ids)
        found = texts.get_present(ids)
    lost = sorted(set(rows) - found.keys())
    if lost:
        raise IntegrityError(f"entries {lost[:10]} have no text in the vault (it was altered)")
    return {i: text for i, text in found.items() if i in rows}


@contextmanager
def read_view(records: RecordStore, vectors: VectorIndex, *, read_only: bool) -> Iterator[None]:
    """One read transaction around a search: a reader catches up and then reads the catalog in the same
    database snapshot, so a writer committing meanwhile cannot tear the result (e.g. a hit whose row was
    deleted between the index search and the metadata lookup). The writer's own view cannot move."""
    with storage_errors("reading the memory"):
        if not read_only:
            yield
            return
        with records.read_view():
            vectors.catch_up()
            yield
