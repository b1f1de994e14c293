"""What authenticating catalog metadata costs on the search path (issue 13): the same memory, the same run,
searches timed with the row-tag checks on and with them switched off (``check_row`` made a no-op).

Builds an N-entry encrypted memory (clustered unit vectors of MiniLM's width, short texts, two tenants,
five tasks), then times, alternating on/off per round: an unfiltered search of one query and of a batch
of 32 (k=10; each hit's row is read and its tag checked), a filtered search (task filter, k=10), and
``get_texts`` of the hits (the replay fetch, which now reads the hits' rows too). It also times the one-off
check a handle makes of every row before its first metadata-selecting query (filters, groups), which grows
with N.

    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 .venv/bin/python benchmarks/metadata_auth.py --n 200000
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from _report import print_and_save  # benchmarks/ is on sys.path when run as a script

from rehearsal.crypto.keys import KeyRing
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.store.authenticity import CatalogAuthenticator

HERE = Path(__file__).resolve().parent
DIM = 384


def _clustered(rng: np.random.Generator, centres: np.ndarray, n: int) -> np.ndarray:
    x = centres[rng.integers(0, len(centres), n)] + rng.standard_normal((n, DIM)).astype(np.float32) * 0.03
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _median_ms(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path, default=HERE / "out" / "metadata_auth.json")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((1_000, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    keys = KeyRing.generate()
    checked = CatalogAuthenticator.check_row
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mem"
        with RehearsalMemory.create(path, keys=keys, dim=DIM, encoder_name=f"synthetic-{DIM}") as mem:
            for start in range(0, args.n, args.batch):
                n = min(args.batch, args.n - start)
                mem.add(
                    [f"synthetic entry {start + j}" for j in range(n)],
                    vectors=_clustered(rng, centres, n),
                    metadata=[{"task": f"t{(start + j) % 5}", "label": (start + j) % 7} for j in range(n)],
                    tenant="alice" if start % (2 * args.batch) == 0 else "bob",
                )
        one = _clustered(np.random.default_rng(1), centres, 1)
        many = _clustered(np.random.default_rng(2), centres, 32)

        t = time.perf_counter()
        mem = RehearsalMemory.open(path, keys=keys, read_only=True)
        open_s = time.perf_counter() - t
        t = time.perf_counter()
        mem.search_vectors(one, 10, where={"task": "t1"})
        first_filter_s = time.perf_counter() - t  # includes the one-off check of every row's tag

        cases: dict[str, Callable[[], Any]] = {
            "search_1_query_ms": lambda: mem.search_vectors(one, 10),
            "search_32_queries_ms": lambda: mem.search_vectors(many, 10),
            "filtered_search_1_query_ms": lambda: mem.search_vectors(one, 10, where={"task": "t1"}),
            "get_texts_of_10_hits_ms": lambda: mem.get_texts([h.id for h in mem.search_vectors(one, 10)[0]]),
        }
        on: dict[str, list[float]] = {name: [] for name in cases}
        off: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.rounds):
            for name, fn in cases.items():
                on[name].append(_median_ms(fn, args.repeats))
                CatalogAuthenticator.check_row = lambda self, values, tag: None  # type: ignore[method-assign]
                try:
                    off[name].append(_median_ms(fn, args.repeats))
                finally:
                    CatalogAuthenticator.check_row = checked  # type: ignore[method-assign]
        mem.close()

    result: dict[str, Any] = {"entries": args.n, "dim": DIM, "open_s": round(open_s, 3)}
    result["first_filtered_search_s (checks every row once per handle)"] = round(first_filter_s, 3)
    for name in cases:
        a, b = statistics.median(on[name]), statistics.median(off[name])
        result[f"{name} checked"] = round(a, 3)
        result[f"{name} unchecked"] = round(b, 3)
        result[f"{name} ratio"] = round(a / b, 3)
    print_and_save(result, args.out)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    main()
