"""How fast and how exact a memory's search is, measured on the memory itself (``rehearsal bench``).

Queries are stored vectors drawn with a seed; the baseline is exact inner-product search over every
stored vector, timed on the same queries in the same process, so the speedup is a ratio that survives a
noisy machine. Recall@k is the share of the exact top-k ids the memory's index returns, each query's own
entry left out of both lists (finding itself would make every recall look perfect). The memory's own
``search_vectors`` (index + catalog lookups, as replay uses it) is timed too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from rehearsal.errors import ValidationError
from rehearsal.store.protocols import VectorIndex

__all__ = ["bench_memory"]

_EXACT_CHUNK = 32  # queries scored against every vector at once (32 x 1M float32 = 128 MB)


def _exact_top_k(queries: np.ndarray, vectors: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), _EXACT_CHUNK):
        scores = queries[start : start + _EXACT_CHUNK] @ vectors.T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
        out[start : start + len(scores)] = ids[np.take_along_axis(top, order, axis=1)]
    return out


def _recall(found: np.ndarray, exact: np.ndarray, own: int, k: int) -> float:
    """Share of the exact top-k (without the query's own id) that the index found (likewise)."""
    want = [int(i) for i in exact if i != own][:k]
    got = {int(i) for i in found if i != own and i >= 0}
    return len(got & set(want)) / len(want) if want else 1.0


def bench_memory(
    index: VectorIndex,
    search_vectors: Callable[[np.ndarray, int], Any],
    *,
    queries: int = 200,
    k: int = 10,
    seed: int = 0,
) -> dict[str, Any]:
    """Recall@k and per-query latency of a memory's ``index`` against exact search (see the module doc);
    ``search_vectors`` is the memory's own search, timed beside it."""
    for name, value in (("queries", queries), ("k", k)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValidationError(f"{name!r} must be a positive int, got {value!r}")
    ids, vectors = index.load_all()
    if len(ids) == 0:
        raise ValidationError("the memory is empty: nothing to search")
    k = min(k, len(ids))
    pick = np.random.default_rng(seed).choice(len(ids), size=min(queries, len(ids)), replace=False)
    q = np.ascontiguousarray(vectors[pick])

    started = time.perf_counter()
    exact = _exact_top_k(q, vectors, ids, min(k + 1, len(ids)))
    exact_s = time.perf_counter() - started
    started = time.perf_counter()
    _, found = index.search(q, k + 1)
    index_s = time.perf_counter() - started
    own = ids[pick]
    started = time.perf_counter()
    search_vectors(q, k)
    memory_s = time.perf_counter() - started

    recall = float(np.mean([_recall(f, e, int(i), k) for f, e, i in zip(found, exact, own, strict=True)]))
    n = len(q)
    return {
        "entries": len(ids),
        "index": index.spec,
        "nprobe": index.nprobe,
        "queries": n,
        "k": k,
        "recall_at_k": recall,
        "index_ms_per_query": 1000 * index_s / n,
        "memory_ms_per_query": 1000 * memory_s / n,
        "exact_ms_per_query": 1000 * exact_s / n,
        "speedup_vs_exact": exact_s / index_s if index_s > 0 else float("inf"),
    }
