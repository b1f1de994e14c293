"""The ``VectorIndex`` of a Milvus server: the memory's vectors in one collection, following the record store.

The record store stays the source of truth (it keeps every vector, sealed when the memory is encrypted);
the collection is derived from it and can always be rebuilt. Each vector sits in the collection beside the
scalar fields a filter needs (tenant, digests of task / label name / tags, int label, the generation that
added it), so a ``where`` tree is answered by Milvus as it searches (:mod:`rehearsal.store.milvus.expr`).

Following the record store: the writer upserts what a commit added and deletes what it removed, then
records the commit's generation as a collection property; opening replays the record store's changes after
that generation, so a writer that died between its commit and Milvus loses nothing. Always upsert, never
insert: inserting an id that is already there duplicates it in Milvus. Readers never write to the server;
they search what the writer published, up to their own generation, and every hit is checked against the
record store, so an id the records no longer hold is never returned.

A forget deletes the tenant's vectors and then asks Milvus to compact them out of its segments, and records
the forget's generation in the collection when it has (the record store's ``ERASE_META_KEY`` mark, like
the FAISS snapshot's rewrite): a writer killed in between leaves a collection that ``holds_erased``, and the
next writer's open deletes and compacts again.

The collection holds the vectors as they rest in the record store (``at_rest``: float16 in the embedded
catalog since its format 2, float32 in a server's records), so every handle searches the same values.

In the server the vectors are stored in the clear (Milvus must compute with them); the record store's
copy stays sealed, and the texts never leave the text store.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from rehearsal.errors import ConfigError, DimensionMismatchError, StorageError, ValidationError
from rehearsal.store.milvus.connection import MilvusLocation, connect, milvus_errors
from rehearsal.store.milvus.expr import NOTHING, compile_where, digest, id_list
from rehearsal.store.protocols import ERASE_META_KEY, RecordStore, Sealer, VectorRow
from rehearsal.store.types import EntryRow
from rehearsal.store.vectors_at_rest import FLOAT16, as_stored, open_vector_rows, seal_vectors
from rehearsal.store.where import Where

__all__ = ["ERASED_PROPERTY", "GENERATION_PROPERTY", "MilvusIndex"]

GENERATION_PROPERTY = "rehearsal.generation"
ERASED_PROPERTY = "rehearsal.erased"  # the last forget whose vectors were deleted and compacted away
_WINDOW = 16_384  # Milvus's largest top-k and query window; also the longest id list sent in one filter
_UPSERT_ROWS = 2_000  # rows per upsert request (a 384-d batch is ~3 MB, far under gRPC's message cap)
_MAX_TAGS = 4_096  # Milvus's largest array capacity: an entry's first 4096 distinct tags are filterable
_HNSW_M = 16
_HNSW_EF_CONSTRUCTION = 200
_EF_MIN = 128  # search breadth: at least this, and at least the number of hits asked for
_RETRIES = 3  # re-asks with a wider limit when hits the record store no longer holds crowd a row out


def _padded(n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((n, k), -np.inf, dtype=np.float32), np.full((n, k), -1, dtype=np.int64)


class MilvusIndex:
    """Vectors of one memory in the Milvus collection ``collection``; ``sealer`` is None when unencrypted."""

    def __init__(
        self,
        location: MilvusLocation,
        collection: str,
        dim: int,
        records: RecordStore,
        sealer: Sealer | None,
        *,
        read_only: bool,
        at_rest: np.dtype = FLOAT16,
    ) -> None:
        self.location = location
        self.collection = collection
        self.dim = dim
        self.records = records
        self.vault = sealer
        self.read_only = read_only
        self.at_rest = at_rest  # how the record store keeps the vectors (see the module doc)
        self.generation = -1  # the last committed mutation the collection reflects, for this handle
        self._dropped: set[int] = set()  # erased upstream, seen by this (read-only) handle
        self._count: tuple[int, int] | None = None  # (generation, entries) of the last count
        self._erased = -1  # ERASED_PROPERTY as last read from or written to the collection
        self._client: Any = connect(location)

    def __repr__(self) -> str:
        return f"MilvusIndex({str(self.location)!r}, collection={self.collection!r}, dim={self.dim})"

    # -- what the facade reads -----------------------------------------------------------------------
    @property
    def spec(self) -> str:
        return f"Milvus,HNSW{_HNSW_M}"

    @property
    def nprobe(self) -> int:
        return 0

    def __len__(self) -> int:
        if self._count is None or self._count[0] != self.generation:
            with milvus_errors(f"counting the vectors in Milvus collection {self.collection!r}"):
                found = self._client.query(
                    self.collection, filter=self._visible(), output_fields=["count(*)"]
                )
            self._count = (self.generation, int(found[0]["count(*)"]))
        return self._count[1]

    def ids(self) -> np.ndarray:
        """Every id the collection holds for this handle, sorted."""
        found: list[int] = []
        with milvus_errors(f"listing the ids in Milvus collection {self.collection!r}"):
            pages = self._client.query_iterator(
                self.collection, batch_size=_WINDOW, filter=self._visible(), output_fields=["id"]
            )
            try:
                while page := pages.next():
                    found.extend(int(row["id"]) for row in page)
            finally:
                pages.close()
        return np.asarray(sorted(set(found) - self._dropped), dtype=np.int64)

    def seal(self, tenant: str, ids: list[int], vectors: np.ndarray) -> list[bytes]:
        return seal_vectors(self.vault, tenant, ids, vectors, dtype=self.at_rest)

    def unseal(self, rows: list[VectorRow]) -> tuple[np.ndarray, np.ndarray]:
        return open_vector_rows(self.vault, rows, self.dim, dtype=self.at_rest)

    def load_all(self) -> tuple[np.ndarray, np.ndarray]:
        """Every stored vector, from the record store, authenticated, in id order."""
        return self.unseal(list(self.records.vectors(min_gen_exclusive=-1)))

    # -- the collection ------------------------------------------------------------------------------
    def create(self) -> None:
        """Make the (new) collection of a new memory; one of that name already there is a ConfigError."""
        with milvus_errors(f"creating Milvus collection {self.collection!r}"):
            if self._client.has_collection(self.collection):
                raise ConfigError(f"Milvus at {self.location} already has a collection {self.collection!r}")
            self._create_collection()
        self._publish(self.records.generation)

    def _create_collection(self) -> None:
        from pymilvus import DataType

        schema = self._client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        schema.add_field("gen", DataType.INT64)
        schema.add_field("tenant", DataType.VARCHAR, max_length=64)
        schema.add_field("task", DataType.VARCHAR, max_length=32, nullable=True)
        schema.add_field("label_int", DataType.INT64, nullable=True)
        schema.add_field("label_key", DataType.VARCHAR, max_length=32, nullable=True)
        schema.add_field(
            "tags", DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=_MAX_TAGS, max_length=32
        )
        index = self._client.prepare_index_params()
        index.add_index(
            field_name="vector",
            index_type="HNSW",
            metric_type="IP",
            params={"M": _HNSW_M, "efConstruction": _HNSW_EF_CONSTRUCTION},
        )
        # Strong consistency: an acknowledged add is searchable, and a deleted id gone, at once (Milvus's
        # default, Bounded, lets a search miss the last few seconds of writes).
        self._client.create_collection(
            self.collection, schema=schema, index_params=index, consistency_level="Strong"
        )

    def _server_generation(self) -> int | None:
        """The generation the writer last published (None: the collection is missing)."""
        with milvus_errors(f"reading Milvus collection {self.collection!r}"):
            if not self._client.has_collection(self.collection):
                return None
            described = self._client.describe_collection(self.collection)
        fields = {f["name"]: f for f in described.get("fields", [])}
        width = fields.get("vector", {}).get("params", {}).get("dim")
        if width is not None and int(width) != self.dim:
            raise DimensionMismatchError(
                f"Milvus collection {self.collection!r} holds {width}-d vectors, the memory {self.dim}-d"
            )
        properties = described.get("properties", {})
        self._erased = int(properties.get(ERASED_PROPERTY, -1))
        return int(properties.get(GENERATION_PROPERTY, -1))

    def _publish(self, generation: int) -> None:
        with milvus_errors(f"recording generation {generation} in Milvus collection {self.collection!r}"):
            self._client.alter_collection_properties(
                self.collection, properties={GENERATION_PROPERTY: str(generation)}
            )
        self.generation = generation

    # -- following the record store ------------------------------------------------------------------
    def load(self) -> None:
        """Find the collection and catch up with the record store (a writer rebuilds a missing one)."""
        published = self._server_generation()
        if published is not None and published > self.records.generation and not self.read_only:
            # The collection is ahead of the records (they were restored from an older copy): what it holds
            # beyond them cannot be told apart by generation, so it is rebuilt from the record store.
            with milvus_errors(f"dropping Milvus collection {self.collection!r} to rebuild it"):
                self._client.drop_collection(self.collection)
            published = None
        if published is None:
            if self.read_only:
                raise StorageError(
                    f"Milvus at {self.location} has no collection {self.collection!r}; open the memory"
                    " for writing once to rebuild it from the record store"
                )
            with milvus_errors(f"creating Milvus collection {self.collection!r}"):
                self._create_collection()
            published = -1
        with milvus_errors(f"loading Milvus collection {self.collection!r}"):
            # A collection is searchable only once loaded, and a restarted server starts with it released.
            self._client.load_collection(self.collection)
        self.generation = published
        self.catch_up()

    def catch_up(self) -> None:
        """A writer applies the record store's changes since ``generation``; a reader takes what the writer
        published (never past its own view of the record store)."""
        if self.read_only:
            published = self._server_generation()
            self.generation = min(published if published is not None else -1, self.records.generation)
            if self.generation < self.records.generation:
                # What the records removed since (a forget the writer died before deleting, say) may still
                # sit in the collection: never list it, as searches never return it.
                self._dropped.update(self.records.removed_since(self.generation))
            return
        with self.records.read_view():
            latest = self.records.generation
            if latest == self.generation:
                return
            removed = self.records.removed_since(self.generation)
            rows = list(self.records.vectors(min_gen_exclusive=self.generation))
            entries = self.records.rows([r[0] for r in rows]) if rows else {}
        ids, vectors = open_vector_rows(self.vault, rows, self.dim, dtype=self.at_rest)
        self._delete(removed)
        self._upsert(ids.tolist(), vectors, entries, generation=latest)
        self._publish(latest)

    def applied(self, generation: int, evict: list[int], ids: list[int], vectors: np.ndarray | None) -> None:
        """Follow a commit that is already durable: delete, upsert, then publish its generation."""
        self._delete(evict)
        if ids and vectors is not None:
            stored = as_stored(vectors, self.at_rest)  # what a handle reading the records back searches
            self._upsert(ids, stored, self.records.rows(ids), generation=generation)
        self._publish(generation)

    def _delete(self, ids: Sequence[int]) -> None:
        with milvus_errors(f"deleting from Milvus collection {self.collection!r}"):
            for start in range(0, len(ids), _WINDOW):
                # Never an empty "in []": older Milvus Lite crashed on it.
                self._client.delete(self.collection, filter=f"id in {id_list(ids[start : start + _WINDOW])}")

    def _upsert(
        self, ids: Sequence[int], vectors: np.ndarray, entries: dict[int, EntryRow], *, generation: int
    ) -> None:
        rows = [
            self._row(int(i), vectors[pos], entries[int(i)], generation)
            for pos, i in enumerate(ids)
            if int(i) in entries
        ]
        with milvus_errors(f"writing to Milvus collection {self.collection!r}"):
            for start in range(0, len(rows), _UPSERT_ROWS):
                self._client.upsert(self.collection, rows[start : start + _UPSERT_ROWS])

    @staticmethod
    def _row(record_id: int, vector: np.ndarray, entry: EntryRow, generation: int) -> dict[str, Any]:
        label = entry.label
        tags = list(dict.fromkeys(digest(t) for t in entry.tags))[:_MAX_TAGS]
        return {
            "id": record_id,
            "vector": np.ascontiguousarray(vector, dtype=np.float32),
            "gen": generation,
            "tenant": entry.tenant,
            "task": digest(entry.task) if entry.task is not None else None,
            "label_int": label if isinstance(label, int) and not isinstance(label, bool) else None,
            "label_key": digest(label) if isinstance(label, str) else None,
            "tags": tags,
        }

    def drop(self, ids: Sequence[int]) -> None:
        self._dropped.update(int(i) for i in ids)

    def rebuild_if_outgrown(self) -> bool:
        return False  # Milvus grows its own segments and indexes

    def checkpoint(self, *, force: bool = False) -> None:
        """Forced (after a tenant is forgotten): ask Milvus to compact, so the deleted vectors leave its
        segments rather than wait for the next automatic compaction, then record that the collection
        holds nothing erased up to its generation."""
        if self.read_only or not force:
            return
        with milvus_errors(f"compacting Milvus collection {self.collection!r}"):
            self._client.compact(self.collection)
            self._client.alter_collection_properties(
                self.collection,
                properties={GENERATION_PROPERTY: str(self.generation), ERASED_PROPERTY: str(self.generation)},
            )
        self._erased = self.generation

    def holds_erased(self) -> bool:
        """Whether the collection may still hold a forgotten tenant's vectors: the last forget's deletes and
        compaction were not recorded in it (a writer killed between the forget's commit and that)."""
        erased = int(self.records.get_meta(ERASE_META_KEY, "-1") or -1)
        return self._erased < erased

    def close(self) -> None:
        self._client.close()

    def discard(self) -> None:
        """Drop the collection of a memory whose creation failed, then close (best effort: with the server
        gone there is nothing to drop, and the creation's own error is the one to report)."""
        try:
            with contextlib.suppress(Exception):
                if self._client.has_collection(self.collection):
                    self._client.drop_collection(self.collection)
        finally:
            self.close()

    # -- searching -----------------------------------------------------------------------------------
    def _visible(self) -> str:
        # A reader must not see what the writer added after the reader's own generation.
        return f"gen <= {int(self.generation)}"

    def search_where(
        self, queries: np.ndarray, k: int, where: Where | None, *, threads: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`search`, restricted to the entries ``where`` admits, which Milvus filters as it searches
        (the ``FilteringIndex`` the facade's searcher prefers: no list of allowed ids is built)."""
        return self.search(queries, k, where=where)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        allowed_ids: np.ndarray | None = None,
        where: Where | None = None,
        threads: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(n, dim) queries -> (scores (n, k), ids (n, k), -1 padded), filtered by ``where`` inside Milvus
        and/or restricted to ``allowed_ids``; ``threads`` is the server's business and is ignored. At most
        16384 hits per query come back (Milvus's top-k limit)."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValidationError(f"k must be a positive int, got {k!r}")
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise DimensionMismatchError(f"queries have shape {q.shape}, the index has dim {self.dim}")
        scores, found = _padded(len(q), k)
        if len(q) == 0:
            return scores, found
        compiled = compile_where(where)
        if compiled is NOTHING:
            return scores, found
        expr = self._visible() + (f" and ({compiled})" if compiled else "")
        if allowed_ids is None:
            return self._search(q, k, expr)
        allowed = np.unique(np.asarray(allowed_ids, dtype=np.int64))
        for start in range(0, len(allowed), _WINDOW):
            # Each slice of the allowed ids is one filtered search; the best k of all of them win.
            part = self._search(q, k, f"{expr} and id in {id_list(allowed[start : start + _WINDOW])}")
            both_scores = np.concatenate([scores, part[0]], axis=1)
            both_ids = np.concatenate([found, part[1]], axis=1)
            order = np.argsort(-both_scores, axis=1, kind="stable")[:, :k]
            scores = np.take_along_axis(both_scores, order, axis=1)
            found = np.take_along_axis(both_ids, order, axis=1)
        return scores, found

    def _search(self, q: np.ndarray, k: int, expr: str) -> tuple[np.ndarray, np.ndarray]:
        """Top-k under ``expr``, keeping only ids the record store holds (asking wider when some are not)."""
        limit = min(k, _WINDOW)
        for attempt in range(_RETRIES + 1):
            with milvus_errors(f"searching Milvus collection {self.collection!r}"):
                result = self._client.search(
                    self.collection,
                    data=list(q),
                    limit=limit,
                    filter=expr,
                    anns_field="vector",
                    output_fields=["id"],
                    search_params={"metric_type": "IP", "params": {"ef": max(_EF_MIN, limit)}},
                )
            rows = [[(int(hit["id"]), float(hit["distance"])) for hit in row] for row in result]
            present = self.records.existing({i for row in rows for i, _ in row}) - self._dropped
            short = any(len(row) == limit and sum(i in present for i, _ in row) < k for row in rows)
            if not short or limit >= _WINDOW or attempt == _RETRIES:
                break
            limit = min(_WINDOW, limit * 4)
        scores, found = _padded(len(q), k)
        for r, row in enumerate(rows):
            kept = [(i, s) for i, s in row if i in present][:k]
            for c, (i, s) in enumerate(kept):
                found[r, c], scores[r, c] = i, s
        return scores, found
