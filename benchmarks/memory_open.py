"""Opening a large encrypted memory, its disk cost per entry, and its search against exact flat search.

Builds an N-entry encrypted memory (default 1M) from clustered synthetic unit vectors of MiniLM's width,
added in batches of 20k with short synthetic texts; closes it; times ``RehearsalMemory.open`` (bar <= 2 s);
reports disk bytes per entry apart from the text ciphertext (folder bytes minus the ``sealed`` bytes of
``vault_records``); and compares ``memory.search_vectors`` with exact numpy search over the same vectors
(bar: recall@10 >= 0.95 at >= 30x the speed).

    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 .venv/bin/python benchmarks/memory_open.py --n 1000000
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from _report import print_and_save  # benchmarks/ is on sys.path when run as a script

from rehearsal.crypto.keys import KeyRing
from rehearsal.memory.facade import RehearsalMemory

HERE = Path(__file__).resolve().parent
DIM = 384


def clustered(rng: np.random.Generator, centres: np.ndarray, n: int) -> np.ndarray:
    """Points around random centres; noise of norm ~0.5 puts in-cluster cosines near 0.9."""
    picks = rng.integers(0, len(centres), n)
    x = centres[picks] + rng.standard_normal((n, centres.shape[1])).astype(np.float32) * (0.5 / np.sqrt(DIM))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def exact_top_k(queries: np.ndarray, data: np.ndarray, k: int) -> np.ndarray:
    sims = queries @ data.T
    top = np.argpartition(-sims, k, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1)
    return np.take_along_axis(top, order, axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="entries in the memory")
    parser.add_argument("--batch", type=int, default=20_000)
    parser.add_argument("--clusters", type=int, default=2_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--opens", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="where to build (default: a temp folder)")
    parser.add_argument("--out", type=Path, default=HERE / "out" / "memory_open.json")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((args.clusters, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    data = np.empty((args.n, DIM), dtype=np.float32)
    keys = KeyRing.generate()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "mem"
        t0 = time.perf_counter()
        mem = RehearsalMemory.create(path, keys=keys, dim=DIM, encoder_name=f"synthetic-{DIM}")
        for start in range(0, args.n, args.batch):
            n = min(args.batch, args.n - start)
            data[start : start + n] = clustered(rng, centres, n)
            texts = [f"synthetic entry {start + j}" for j in range(n)]
            mem.add(
                texts, vectors=data[start : start + n], metadata=[{"task": f"t{start // args.batch % 5}"}] * n
            )
            print(f"  added {start + n:>9,} entries  {time.perf_counter() - t0:7.1f} s", flush=True)
        spec = mem.stats()["index_spec"]
        mem.close()
        build_s = time.perf_counter() - t0

        opens = []
        for _ in range(args.opens):
            t1 = time.perf_counter()
            mem = RehearsalMemory.open(path, keys=keys)
            opens.append(time.perf_counter() - t1)
            if len(opens) < args.opens:
                mem.close()

        folder_bytes = sum(p.stat().st_size for p in path.iterdir() if p.is_file())
        with sqlite3.connect(path / "memory.sqlite") as conn:
            cipher_bytes = conn.execute("SELECT SUM(LENGTH(sealed)) FROM vault_records").fetchone()[0]
        snapshot_bytes = (path / "index.snap").stat().st_size

        queries = clustered(np.random.default_rng(1), centres, args.queries)
        t2 = time.perf_counter()
        truth = exact_top_k(queries, data, 10)
        flat_s = time.perf_counter() - t2
        mem.search_vectors(queries[:5], k=10)  # warm-up
        t3 = time.perf_counter()
        hits = mem.search_vectors(queries, k=10)
        memory_s = time.perf_counter() - t3
        mem.close()

    recall = float(
        np.mean([len({h.id for h in row} & set(t.tolist())) / 10 for row, t in zip(hits, truth, strict=True)])
    )
    result = {
        "entries": args.n,
        "dim": DIM,
        "index_spec": spec,
        "build_s": round(build_s, 1),
        "open_s_median": round(statistics.median(opens), 3),
        "open_s_all": [round(s, 3) for s in opens],
        "open_bar_s": 2.0,
        "folder_bytes": folder_bytes,
        "text_ciphertext_bytes": int(cipher_bytes),
        "index_snapshot_bytes": snapshot_bytes,
        "bytes_per_entry_excluding_text_ciphertext": round((folder_bytes - cipher_bytes) / args.n, 1),
        "queries": args.queries,
        "recall_at_10": round(recall, 4),
        "flat_numpy_s": round(flat_s, 4),
        "memory_search_s": round(memory_s, 4),
        "speedup": round(flat_s / memory_s, 1),
        "search_bar": "recall >= 0.95 at >= 30x",
    }
    print_and_save(result, args.out)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    main()
