"""The same memory on each backend: SQLite+FAISS (a folder) and PostgreSQL+pgvector (a throwaway server).

For each backend: build an encrypted memory of N entries (clustered synthetic unit vectors of MiniLM's
width, short texts, 20 tasks so ``{"task": "t3"}`` selects 5%, and the same 5% again as a tag, a field no
column index covers) in batches through ``RehearsalMemory.add``
and report the ingest rate; time the close (FAISS writes its snapshot, pgvector builds its HNSW index)
and then ``open``; then 32 queries top-10, unfiltered and with the 5%
filter, timed as one ``search_vectors`` call (median of --repeats) and scored as recall@10 against exact
search over the same (filtered) vectors. A backend is a function that yields a location, so another
(PostgreSQL+Milvus) adds an entry to ``BACKENDS``.

    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 .venv/bin/python benchmarks/servers.py --n 100000

``--pg-url`` builds the PostgreSQL memory in a database of a server already running (``python -m
rehearsal.testing.postgres --fsync``) and leaves it there, under a fixed benchmark-only key, so that
``benchmarks/overhead.py --server URL`` can replay from the same 1M-entry memory afterwards.
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
from rehearsal.store.postgres import vectors as pg_vectors
from rehearsal.store.postgres.connection import connect as pg_connect
from rehearsal.store.postgres.connection import parse_location
from rehearsal.testing.postgres import start_postgres

HERE = Path(__file__).resolve().parent
DIM = 384
TASKS = 20  # task "t3" is 1/20 = 5% of the entries
K = 10


@contextlib.contextmanager
def sqlite_faiss(workdir: Path) -> Iterator[str]:
    yield str(workdir / "memory")


PG_URL: str | None = (
    None  # --pg-url: an existing database to build in (and keep) instead of a throwaway server
)
BENCH_KEY = bytes(32)  # the key of a memory kept for another benchmark: never a real key


@contextlib.contextmanager
def postgres_pgvector(workdir: Path) -> Iterator[str]:
    if PG_URL is not None:
        yield PG_URL
        return
    # Its own folder in the system temp folder: the server account cannot enter workdir (root-only).
    with start_postgres(fsync=True) as server:  # fsync on: ingest figures as a real server's
        yield server.create_database("bench")


BACKENDS: dict[str, Callable[[Path], contextlib.AbstractContextManager[str]]] = {
    "sqlite+faiss": sqlite_faiss,
    "postgresql+pgvector": postgres_pgvector,
}


def clustered(rng: np.random.Generator, n: int, clusters: int) -> np.ndarray:
    centres = rng.standard_normal((clusters, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[rng.integers(0, clusters, n)]
    x = x + rng.standard_normal((n, DIM)).astype(np.float32) * (0.5 / np.sqrt(DIM))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def exact(queries: np.ndarray, data: np.ndarray, ids: np.ndarray, k: int) -> list[set[int]]:
    sims = queries @ data.T
    top = np.argpartition(-sims, k, axis=1)[:, :k]
    return [set(ids[row].tolist()) for row in top]


def recall(hits: list[list[Any]], truth: list[set[int]]) -> float:
    found = [len({h.id for h in row} & want) / len(want) for row, want in zip(hits, truth, strict=True)]
    return float(np.mean(found))


def measure(name: str, location: str, data: np.ndarray, args: argparse.Namespace) -> dict[str, Any]:
    keys = KeyRing.from_bytes(BENCH_KEY) if PG_URL is not None else KeyRing.generate()
    tasks = np.arange(len(data)) % TASKS
    if args.reuse and PG_URL is not None and name.startswith("postgresql"):
        return measure_search(name, location, keys, data, args, reindex(location, args.reindex))
    memory = RehearsalMemory.create(location, keys=keys, dim=DIM, encoder_name="synthetic")
    start = time.perf_counter()
    for lo in range(0, len(data), args.batch):
        hi = min(lo + args.batch, len(data))
        memory.add(
            [f"synthetic example {i}" for i in range(lo, hi)],
            vectors=data[lo:hi],
            metadata=[
                {"task": f"t{tasks[i]}", "label": int(i % 7), "tags": [f"g{tasks[i]}"]} for i in range(lo, hi)
            ],
        )
    ingest_s = time.perf_counter() - start
    print(f"{name}: ingested {len(data):,} in {ingest_s:.0f} s", flush=True)
    start = time.perf_counter()
    memory.close()  # SQLite+FAISS: writes the index snapshot; pgvector: builds the HNSW index
    close_s = time.perf_counter() - start
    print(f"{name}: closed (index built/saved) in {close_s:.0f} s", flush=True)
    opens = []
    for _ in range(args.opens):
        start = time.perf_counter()
        memory = RehearsalMemory.open(location, keys=keys)
        opens.append(time.perf_counter() - start)
        memory.close()
    built = {"ingest_per_s": round(len(data) / ingest_s), "close_s": round(close_s, 2),
             "open_s": round(statistics.median(opens), 3)}  # fmt: skip
    return measure_search(name, location, keys, data, args, built)


def reindex(location: str, params: list[int] | None) -> dict[str, Any]:
    """--reindex M,EF_CONSTRUCTION: rebuild the kept memory's HNSW index with other parameters, timed,
    with the build settings the memory itself uses (its maintenance_work_mem and parallel workers)."""
    if not params:
        return {}
    m, ef_construction = params
    conn = pg_connect(parse_location(location), read_only=False, register_vector=False)
    try:
        count = int(conn.execute("SELECT value FROM mem_meta WHERE key = 'count'").fetchone()[0])
        conn.execute(f"SET maintenance_work_mem = '{pg_vectors.build_memory_mb(count, DIM)}MB'")
        conn.execute("SET max_parallel_maintenance_workers = 2")
        conn.execute("DROP INDEX IF EXISTS entries_embedding")
        start = time.perf_counter()
        conn.execute(pg_vectors.hnsw_statement(m, ef_construction))
        took = time.perf_counter() - start
    finally:
        conn.close()
    print(f"rebuilt the HNSW index (m={m}, ef_construction={ef_construction}) in {took:.0f} s", flush=True)
    return {"hnsw_m": m, "hnsw_ef_construction": ef_construction, "reindex_s": round(took, 1)}


def measure_search(
    name: str, location: str, keys: KeyRing, data: np.ndarray, args: argparse.Namespace, built: dict[str, Any]
) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    tasks = np.arange(len(data)) % TASKS
    memory = RehearsalMemory.open(location, keys=keys, read_only=True)
    try:
        queries = data[rng.choice(len(data), args.queries, replace=False)]
        queries = queries + rng.standard_normal(queries.shape).astype(np.float32) * 0.02
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        every = np.arange(len(data))
        chosen = every[tasks == 3]
        out: dict[str, Any] = {"backend": name, "n": len(data)}
        cases = (("all", None, every), ("5pct", {"task": "t3"}, chosen), ("5pct_tag", {"tags": "g3"}, chosen))
        # pgvector's candidate list per probe, tried at several values on the same index (a session setting
        # of the memory's connection); the FAISS memory has no such knob and is measured once.
        settings = args.ef_search if name.startswith("postgresql") else [0]
        if args.overfetch and name.startswith("postgresql"):
            pg_vectors.FILTERED_OVERFETCH = args.overfetch
            out["filtered_overfetch"] = args.overfetch
        if args.max_scan_tuples and name.startswith("postgresql"):
            memory._records.conn.execute(f"SET hnsw.max_scan_tuples = {int(args.max_scan_tuples)}")
            out["max_scan_tuples"] = args.max_scan_tuples
        for ef in settings:
            if ef:
                memory._records.conn.execute(f"SET hnsw.ef_search = {int(ef)}")
            suffix = f"_ef{ef}" if ef else ""
            for label, where, ids in cases:
                memory.search_vectors(queries, K, where=where)  # warm: caches, pages, the filter's ids
                times = []
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    hits = memory.search_vectors(queries, K, where=where)
                    times.append(time.perf_counter() - start)
                out[f"search_{label}{suffix}_32q_ms"] = round(1000 * statistics.median(times), 2)
                out[f"recall10_{label}{suffix}"] = round(recall(hits, exact(queries, data[ids], ids, K)), 4)
                timed = out[f"search_{label}{suffix}_32q_ms"]
                print(name, label, suffix, timed, out[f"recall10_{label}{suffix}"], flush=True)
        out.update(built)
        return out
    finally:
        memory.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--clusters", type=int, default=1_000)
    parser.add_argument("--queries", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--opens", type=int, default=3)
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated names")
    parser.add_argument(
        "--ef-search",
        type=lambda text: [int(v) for v in text.split(",")],
        default=[100],
        help="pgvector hnsw.ef_search values to measure (comma-separated)",
    )
    parser.add_argument(
        "--overfetch", type=int, default=0, help="pgvector: fetch this many times k (filtered)"
    )
    parser.add_argument("--max-scan-tuples", type=int, default=0, help="pgvector: hnsw.max_scan_tuples")
    parser.add_argument("--pg-url", default=None, help="build the PostgreSQL memory here and keep it")
    parser.add_argument("--reuse", action="store_true", help="with --pg-url: search the memory built there")
    parser.add_argument(
        "--reindex",
        type=lambda text: [int(v) for v in text.split(",")],
        default=None,
        help="with --reuse: rebuild the HNSW index first with M,EF_CONSTRUCTION",
    )
    parser.add_argument("--dir", type=Path, default=None, help="where to build (default: a temp folder)")
    parser.add_argument("--out", type=Path, default=HERE / "out" / "servers.json")
    args = parser.parse_args()
    global PG_URL
    PG_URL = args.pg_url
    data = clustered(np.random.default_rng(0), args.n, args.clusters)
    result: dict[str, Any] = {"n": args.n, "dim": DIM, "queries": args.queries, "k": K}
    for name in args.backends.split(","):
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp, BACKENDS[name](Path(tmp)) as location:
            started = time.perf_counter()
            row = measure(name, location, data, args)
            row["total_s"] = round(time.perf_counter() - started)
        print(row, flush=True)
        result.update({f"{name}.{key}": value for key, value in row.items() if key not in ("backend", "n")})
    print_and_save(result, args.out)


if __name__ == "__main__":
    main()
