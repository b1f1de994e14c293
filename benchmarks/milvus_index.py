"""The Milvus vector index beside the embedded FAISS one: SQLite+FAISS, SQLite+Milvus, PostgreSQL+Milvus.

For each backend: ingest rate (``memory.add`` in batches, sealed text and vectors), filtered search
latency for 32 queries top-10 with a 5%-selective filter (one ``search_vectors`` call; median of 5),
recall@10 of that search against exact filtered search, and the time to open the memory again. Milvus
here is milvus-lite started by ``rehearsal.testing.milvus`` on 127.0.0.1 and reached by URI, the code path
of a Milvus cluster; milvus-lite is a pure-Python engine, so its speed says nothing about a real server.
PostgreSQL is a throwaway server from ``rehearsal.testing.postgres`` (fsync on).

    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 .venv/bin/python benchmarks/milvus_index.py --n 20000
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from _report import print_and_save  # benchmarks/ is on sys.path when run as a script

from rehearsal.crypto.keys import KeyRing
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.testing.milvus import start_milvus
from rehearsal.testing.postgres import start_postgres

HERE = Path(__file__).resolve().parent
DIM = 384
TASKS = 20  # task "t{i % 20}": each task is 5% of the memory
QUERIES = 32
K = 10


@contextlib.contextmanager
def sqlite_faiss(workdir: Path) -> Iterator[tuple[str, str | None]]:
    yield str(workdir / "memory"), None


@contextlib.contextmanager
def sqlite_milvus(workdir: Path) -> Iterator[tuple[str, str | None]]:
    with start_milvus(workdir / "milvus-data") as milvus:
        yield str(workdir / "memory"), milvus.url


@contextlib.contextmanager
def postgres_milvus(workdir: Path) -> Iterator[tuple[str, str | None]]:
    with start_postgres(fsync=True) as postgres, start_milvus(workdir / "milvus-data") as milvus:
        yield postgres.create_database("bench"), milvus.url


# name -> a context that yields (where the records go, where the vectors go)
BACKENDS: dict[str, Callable[[Path], contextlib.AbstractContextManager[tuple[str, str | None]]]] = {
    "sqlite+faiss": sqlite_faiss,
    "sqlite+milvus": sqlite_milvus,
    "postgresql+milvus": postgres_milvus,
}


def clustered(rng: np.random.Generator, n: int, clusters: int) -> np.ndarray:
    centres = rng.standard_normal((clusters, DIM)).astype(np.float32)
    picks = rng.integers(0, clusters, n)
    noise = rng.standard_normal((n, DIM)).astype(np.float32) * (0.5 / np.sqrt(DIM))
    x = centres[picks] / np.sqrt(DIM) + noise
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def exact_filtered(queries: np.ndarray, data: np.ndarray, allowed: np.ndarray, k: int) -> list[set[int]]:
    sims = queries @ data[allowed].T
    top = np.argsort(-sims, axis=1)[:, :k]
    return [set(allowed[row].tolist()) for row in top]


def measure(
    location: str, keys: KeyRing, data: np.ndarray, batch: int, vectors: str | None, rng: np.random.Generator
) -> dict[str, Any]:
    n = len(data)
    memory = RehearsalMemory.create(location, keys=keys, dim=DIM, encoder_name="synthetic", vectors=vectors)
    start = time.perf_counter()
    for lo in range(0, n, batch):
        hi = min(n, lo + batch)
        memory.add(
            [f"entry {i}" for i in range(lo, hi)],
            metadata=[{"task": f"t{i % TASKS}"} for i in range(lo, hi)],
            vectors=data[lo:hi],
        )
    ingest_s = time.perf_counter() - start
    memory.close()

    start = time.perf_counter()
    memory = RehearsalMemory.open(location, keys=keys, vectors=vectors)
    open_s = time.perf_counter() - start
    try:
        picks = rng.choice(n, QUERIES, replace=False)
        queries = data[picks] + rng.standard_normal((QUERIES, DIM)).astype(np.float32) * (0.3 / np.sqrt(DIM))
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        where = {"task": "t3"}
        allowed = np.arange(3, n, TASKS)
        memory.search_vectors(queries, K, where=where)  # warm: the filter cache, the collection load
        times = []
        for _ in range(5):
            start = time.perf_counter()
            hits = memory.search_vectors(queries, K, where=where)
            times.append(time.perf_counter() - start)
        truth = exact_filtered(queries, data, allowed, K)
        found = [{h.id for h in row} for row in hits]
        recall = float(np.mean([len(f & t) / K for f, t in zip(found, truth, strict=True)]))
        spec = memory.stats()["index_spec"]
    finally:
        memory.close()
    return {
        "index": spec,
        "ingest_per_s": round(n / ingest_s),
        "filtered_search_32q_ms": round(1000 * statistics.median(times), 1),
        "filtered_recall_at_10": round(recall, 4),
        "open_s": round(open_s, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="entries in the memory")
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--clusters", type=int, default=200)
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated names")
    parser.add_argument("--out", type=Path, default=HERE / "out" / "milvus_index.json")
    args = parser.parse_args()

    data = clustered(np.random.default_rng(0), args.n, args.clusters)
    keys = KeyRing.generate()
    result: dict[str, Any] = {"n": args.n, "dim": DIM, "filter_share": 1 / TASKS, "queries": QUERIES, "k": K}
    for name in args.backends.split(","):
        with tempfile.TemporaryDirectory() as tmp, BACKENDS[name](Path(tmp)) as (location, vectors):
            row = measure(location, keys, data, args.batch, vectors, np.random.default_rng(1))
        print(name, row, flush=True)
        result.update({f"{name}.{key}": value for key, value in row.items()})
    print_and_save(result, args.out)


if __name__ == "__main__":
    main()
