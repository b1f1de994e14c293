"""What the sealed row set of a server memory (format 3) costs a query: the same memory, the same run.

Starts a throwaway PostgreSQL (``rehearsal.testing.postgres``), makes an N-entry encrypted memory of
MiniLM's width (two tenants), opens a reader and a writer, and times (medians, ms):

- a reader's filtered ``ids`` when nothing changed (the change counter read, no recount);
- the same query right after another connection's one-entry commit (the rows touched since are checked and
  every row's id and tag is read once to recount the row set), and the recount alone;
- the writer's one-entry add followed by its own filtered ``ids`` (its own commit needs no recount).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/server_rowset.py --n 100000
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from _report import print_and_save  # benchmarks/ is on sys.path when run as a script

from rehearsal.crypto.keys import KeyRing
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.store.postgres.rowset import check_rowset
from rehearsal.testing.postgres import start_postgres

HERE = Path(__file__).resolve().parent
DIM = 384


def _median_ms(fn: Callable[[], Any], repeats: int, before: Callable[[], Any] | None = None) -> float:
    times = []
    for _ in range(repeats):
        if before is not None:
            before()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return round(statistics.median(times) * 1000, 2)


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    keys = KeyRing.generate()
    server = start_postgres()
    try:
        url = server.create_database("rowset")
        with RehearsalMemory.create(url, keys=keys, dim=DIM, encoder_name="synthetic") as memory:
            for start in range(0, args.n, 10_000):
                size = min(10_000, args.n - start)
                tenant = "alice" if start % 20_000 == 0 else "bob"
                memory.add(
                    [f"text {start + i}" for i in range(size)], vectors=_unit(rng, size), tenant=tenant
                )
        result: dict[str, Any] = {"entries": args.n}
        with (
            RehearsalMemory.open(url, keys=keys, read_only=True) as reader,
            RehearsalMemory.open(url, keys=keys) as writer,
            RehearsalMemory.open(url, keys=keys) as other,
        ):
            query = {"tenant": "carol"}  # selects nothing: the query's own cost stays out of the figures
            t = time.perf_counter()
            reader.ids(where=query)
            result["reader: first look (every tag checked, row set tallied), ms"] = round(
                (time.perf_counter() - t) * 1000, 1
            )
            result["reader: filtered ids, nothing changed, ms"] = _median_ms(
                lambda: reader.ids(where=query), args.repeats
            )

            def commit_elsewhere() -> None:
                other.add(["one more"], vectors=_unit(rng, 1), tenant="carol")

            result["reader: filtered ids after another connection's commit, ms"] = _median_ms(
                lambda: reader.ids(where=query), args.repeats, before=commit_elsewhere
            )
            records = reader._records  # type: ignore[attr-defined]  # the recount alone
            sealed = records.check_commit(count_rows=False)
            result["the recount alone, ms"] = _median_ms(
                lambda: check_rowset(records, sealed.entries, sealed.rowset), args.repeats
            )
            writer.ids(where=query)
            result["writer: own one-entry add + filtered ids, ms"] = _median_ms(
                lambda: (
                    writer.add(["mine"], vectors=_unit(rng, 1), tenant="carol"),
                    writer.ids(where=query),
                ),
                args.repeats,
            )
        print_and_save(result, HERE / "results" / "server_rowset.json")
    finally:
        server.remove()


if __name__ == "__main__":
    main()
