"""pgvector as the vector index (see ``VectorIndex``): the vectors are the record store's ``embedding``
column, so there is nothing to follow or snapshot, and a delete or forget removes a vector in the same
transaction as its record.

Search is an HNSW index (inner product on unit vectors = cosine) with ``hnsw.iterative_scan =
relaxed_order``: with a filter, the scan keeps going until it has k matching rows instead of returning the
few of its first ``ef_search`` candidates that pass (the issue's feasibility pass, 100k entries, a
5%-selective filter: recall@10 0.25-0.57 without it, 0.98-0.99 with). A ``where`` filter runs in the same
SQL statement (:meth:`PgVectorIndex.search_where`), so a training step sends one query, not a list of
allowed ids; when the filter is on an indexed column and selective, the planner answers it exactly instead.

The HNSW index is built once the memory holds ``INDEX_AT`` entries, when the memory is checkpointed or
closed, or when a writer opens it: below that an exact scan is fast, and measured here a bulk ingest into
an unindexed table ran ~60x faster than one that updates an HNSW graph row by row (7000/s against ~110/s),
while building the graph afterwards costs ~1000-2500 rows/s once. Later adds update the graph in place.

The vectors are stored in the clear on the server: it must read them to search. Texts stay sealed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rehearsal.errors import IntegrityError
from rehearsal.store.postgres.connection import mapped
from rehearsal.store.postgres.records import ServerRecords
from rehearsal.store.postgres.where import compile_where
from rehearsal.store.protocols import VectorRow
from rehearsal.store.vectors_at_rest import open_vector_rows
from rehearsal.store.where import Where

__all__ = ["EF_SEARCH", "INDEX_AT", "PgVectorIndex", "build_memory_mb", "hnsw_statement"]

EF_SEARCH = 100  # candidates per HNSW probe: unfiltered recall@10 0.997 at 100k (benchmarks/servers.py)
INDEX_AT = 10_000  # entries from which search uses an HNSW index (below: an exact scan, a few ms)
_INDEX_NAME = "entries_embedding"
# Graph degree and build-time candidate list. pgvector's default candidate list (64) built a 1M-entry graph
# (clustered synthetic vectors) whose unfiltered recall@10 was 0.77 at ef_search 100 and whose 5%-filtered
# recall stuck at 0.953 at any ef_search; 128 gave 0.93 and 1.000 for ~10% more build time
# (benchmarks/RESULTS.md, "At 1M entries").
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 128


def hnsw_statement(m: int = HNSW_M, ef_construction: int = HNSW_EF_CONSTRUCTION) -> str:
    """The CREATE INDEX statement of the memory's HNSW index (also used by benchmarks/servers.py)."""
    return (
        f"CREATE INDEX IF NOT EXISTS {_INDEX_NAME} ON entries USING hnsw (embedding vector_ip_ops)"
        f" WITH (m = {int(m)}, ef_construction = {int(ef_construction)})"
    )


# A filtered HNSW scan (relaxed_order) returns the first k matches it meets, not the best k: asking for
# 4k and keeping the best k raised recall@10 with a 5% filter from 0.928 to 0.975 at 100k (2k: 0.950;
# a larger ef_search did not help: 0.925 at 100, 0.928 at 200; strict_order: 0.888), at ~4x the latency.
FILTERED_OVERFETCH = 4
# maintenance_work_mem for the build: a graph that fits builds several times faster (pgvector warns "hnsw
# graph no longer fits" and slows down otherwise). pgvector keeps per element the vector and its layer-0
# neighbour list (2m candidates of ~16 bytes) plus a header: ~2.2 KB at 384 floats, so 1M entries need
# ~2.2 GB. Sized from the entry count with a margin, never below 1 GB, capped so a typo'd count cannot
# ask the server for everything it has.
_BUILD_MEMORY_MIN_MB = 1024
_BUILD_MEMORY_MAX_MB = 16 * 1024
_BUILD_WORKERS = 2  # max_parallel_maintenance_workers for the build: the leader plus two workers


def build_memory_mb(count: int, dim: int) -> int:
    """maintenance_work_mem (MB) for an HNSW build over ``count`` vectors of ``dim`` floats."""
    per_element = dim * 4 + 1024  # the vector, its neighbour lists and element header, with a margin
    wanted = count * per_element // (1024 * 1024) + 64
    return max(_BUILD_MEMORY_MIN_MB, min(_BUILD_MEMORY_MAX_MB, wanted))


class PgVectorIndex:
    """Searches the memory's ``entries`` table on the server; the facade's lock guards every call."""

    nprobe = 0

    def __init__(self, records: ServerRecords) -> None:
        self.records = records
        self.conn = records.conn
        self.dim = records.dim
        self._dropped: set[int] = set()  # erased upstream while this handle was read-only
        self._configured = False
        self.indexed = False  # whether the HNSW index exists (checked at load and catch-up)

    @property
    def generation(self) -> int:
        """The server's generation, read live: there is no copy to fall behind, and several writers on
        several nodes each see the others' commits at once."""
        return self.records.generation

    @property
    def spec(self) -> str:
        return "pgvector HNSW (inner product)" if self.indexed else "exact scan (no HNSW index yet)"

    def _configure(self) -> None:
        if not self._configured:
            # Session settings of this connection; pgvector reads them at each scan.
            self.conn.execute(f"SET hnsw.ef_search = {EF_SEARCH}")
            self.conn.execute("SET hnsw.iterative_scan = relaxed_order")
            self._configured = True

    def __len__(self) -> int:
        return self.records.count()

    def seal(self, tenant: str, ids: list[int], vectors: np.ndarray) -> list[bytes]:
        """The raw float32 rows: the server keeps vectors in the clear (it searches them)."""
        return [row.tobytes() for row in np.ascontiguousarray(vectors, dtype=np.float32)]

    def unseal(self, rows: list[VectorRow]) -> tuple[np.ndarray, np.ndarray]:
        return open_vector_rows(None, rows, self.dim, dtype=np.dtype(np.float32))

    @mapped("opening the vector index")
    def load(self) -> None:
        self.indexed = self._has_index()
        self._configure()

    def _has_index(self) -> bool:
        found = self.conn.execute(
            "SELECT 1 FROM pg_indexes WHERE schemaname = %s AND indexname = %s",
            (self.conn.location.schema, _INDEX_NAME),
        ).fetchone()
        return found is not None

    @mapped("reading the memory")
    def catch_up(self) -> None:
        """Nothing to replay (the server is the index); notice an index another process built."""
        if not self.indexed:
            self.indexed = self._has_index()

    def applied(self, generation: int, evict: list[int], ids: list[int], vectors: np.ndarray | None) -> None:
        """Nothing to follow: the commit changed the searched table itself."""

    def drop(self, ids: Sequence[int]) -> None:
        self._dropped.update(int(i) for i in ids)

    def holds_erased(self) -> bool:
        """Never: the server's rows are the index, and a forget deletes them in its own transaction."""
        return False

    @mapped("building the vector index")
    def rebuild_if_outgrown(self) -> bool:
        """Build the HNSW index once the memory holds ``INDEX_AT`` entries (it then grows in place)."""
        if self.indexed or self.conn.read_only or self.records.count() < INDEX_AT:
            return False
        # Writers wait for the build (CREATE INDEX locks out writes, not reads); it runs once per memory.
        count = self.records.count()
        self.conn.execute(f"SET maintenance_work_mem = '{build_memory_mb(count, self.dim)}MB'")
        self.conn.execute(f"SET max_parallel_maintenance_workers = {_BUILD_WORKERS}")
        try:
            self.conn.execute(hnsw_statement())
        finally:
            self.conn.execute("RESET maintenance_work_mem")
            self.conn.execute("RESET max_parallel_maintenance_workers")
        self.indexed = True
        return True

    def checkpoint(self, *, force: bool = False) -> None:
        """Every committed vector is already durable on the server; only the index may be due (not on a
        connection the server already dropped: closing that handle must not fail for want of an index)."""
        if not self.conn.raw.closed:
            self.rebuild_if_outgrown()

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        allowed_ids: np.ndarray | None = None,
        threads: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        clause, params = "TRUE", []
        if allowed_ids is not None:
            clause, params = "id = ANY(%s)", [np.asarray(allowed_ids, dtype=np.int64).tolist()]
        return self._search(queries, k, clause, params)

    def search_where(
        self, queries: np.ndarray, k: int, where: Where | None, *, threads: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`search` restricted by a filter tree, in the same SQL statement (after the rows added since
        this handle last looked are authenticated: one edited out of the filter's reach is not missed)."""
        if where is not None:
            self.records.check_rows_since()
        clause, params = compile_where(where)
        return self._search(queries, k, clause, params)

    @mapped("searching the memory")
    def _search(
        self, queries: np.ndarray, k: int, clause: str, params: list[object]
    ) -> tuple[np.ndarray, np.ndarray]:
        self._configure()
        if self._dropped:
            clause, params = f"({clause}) AND id <> ALL(%s)", [*params, sorted(self._dropped)]
        n = len(queries)
        scores = np.full((n, k), -np.inf, dtype=np.float32)
        found = np.full((n, k), -1, dtype=np.int64)
        if n == 0:
            return scores, found
        # One round trip for all queries: each row of the LATERAL join is one index scan.
        query = (
            "SELECT q.i, e.id, -(e.embedding <#> q.v) FROM unnest(%s::vector[]) WITH ORDINALITY AS q(v, i)"
            f" CROSS JOIN LATERAL (SELECT id, embedding FROM entries WHERE {clause}"
            " ORDER BY embedding <#> q.v LIMIT %s) AS e"
        )
        fetch = k if clause == "TRUE" else k * FILTERED_OVERFETCH
        rows = self.conn.execute(
            query, [list(np.asarray(queries, dtype=np.float32)), *params, fetch]
        ).fetchall()
        per_query: dict[int, list[tuple[float, int]]] = {}
        for i, entry_id, score in rows:
            per_query.setdefault(int(i) - 1, []).append((float(score), int(entry_id)))
        for i, hits in per_query.items():
            hits.sort(
                key=lambda hit: (-hit[0], hit[1])
            )  # relaxed_order may return them slightly out of order
            for j, (score, entry_id) in enumerate(hits[:k]):
                scores[i, j] = score
                found[i, j] = entry_id
        return scores, found

    @mapped("reading the memory")
    def ids(self) -> np.ndarray:
        rows = self.conn.execute("SELECT id FROM entries ORDER BY id").fetchall()
        return np.asarray([r[0] for r in rows if r[0] not in self._dropped], dtype=np.int64)

    def load_all(self) -> tuple[np.ndarray, np.ndarray]:
        ids: list[int] = []
        vectors: list[bytes] = []
        for entry_id, _, blob in self.records.vectors():
            ids.append(entry_id)
            vectors.append(blob)
        if not ids:
            return np.zeros(0, dtype=np.int64), np.zeros((0, self.dim), dtype=np.float32)
        joined = b"".join(vectors)
        if len(joined) != len(ids) * self.dim * 4:
            raise IntegrityError("the server returned vectors of the wrong width")
        return np.asarray(ids, dtype=np.int64), np.frombuffer(joined, dtype=np.float32).reshape(
            len(ids), self.dim
        )

    def close(self) -> None:
        """Nothing of its own to release: the connection is the record store's."""
