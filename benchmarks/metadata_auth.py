"""What authenticating catalog metadata costs on the search path (issue 13): the same memory, the same run,
searches timed with the row-tag checks on and with them switched off.

Builds an N-entry encrypted memory (clustered unit vectors of MiniLM's width, short texts, two tenants,
five tasks, seven labels; kept in ``--store`` and reused when given), then times:

- the one-off check a handle makes of every row before its first metadata-selecting query (filters,
  groups), on fresh read-only handles, alternately row by row (the code before generation seals, kept
  here verbatim) and on the generation seals (``rehearsal.store.sqlite.seals``);
- alternating on/off per round on one handle: an unfiltered search of one query and of a batch of 32
  (k=10; each hit's row is read and its tag checked), a filtered search of one query (task filter) and
  of 32 (label filter), and ``get_texts`` of the hits (the replay fetch). "Off" makes ``check_row`` a
  no-op and skips the look for unchecked rows before a filter;
- whether the bulk check recurs per generation: an open reader's next filtered search after a writer
  commits 1,000 entries (which are then deleted again, so a reused store keeps its size).

    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 .venv/bin/python benchmarks/metadata_auth.py --n 1000000 \
        --batch 20000 --store benchmarks/out/metadata_auth_1m/mem
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
from rehearsal.store.sqlite.records import SqliteRecords

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
    parser.add_argument(
        "--store",
        type=Path,
        default=None,
        help="keep the memory in this folder (its key beside it, in <folder>.key), reused when it exists,"
        " so a 1M-entry memory is built once; default: a temporary folder",
    )
    parser.add_argument("--first-rounds", type=int, default=3, help="fresh handles per first-query variant")
    parser.add_argument("--build-only", action="store_true", help="build the memory in --store and stop")
    args = parser.parse_args()
    if args.store is not None:
        _run(args, args.store)
        return
    with tempfile.TemporaryDirectory() as tmp:
        _run(args, Path(tmp) / "mem")


def _keys(path: Path) -> KeyRing:
    key_file = path.with_name(path.name + ".key")
    if key_file.exists():
        return KeyRing.from_base64(key_file.read_text().strip())
    keys = KeyRing.generate()
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key_file.write_text(keys.export_base64() + "\n")
    key_file.chmod(0o600)
    return keys


def _build(args: argparse.Namespace, path: Path, keys: KeyRing, centres: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    with RehearsalMemory.create(path, keys=keys, dim=DIM, encoder_name=f"synthetic-{DIM}") as mem:
        for start in range(0, args.n, args.batch):
            n = min(args.batch, args.n - start)
            mem.add(
                [f"synthetic entry {start + j}" for j in range(n)],
                vectors=_clustered(rng, centres, n),
                metadata=[{"task": f"t{(start + j) % 5}", "label": (start + j) % 7} for j in range(n)],
                tenant="alice" if start % (2 * args.batch) == 0 else "bob",
            )
            print(f"  added {start + n:>9,} entries  {time.perf_counter() - t0:7.1f} s", flush=True)


def _row_by_row_check(self: SqliteRecords) -> int:
    """``SqliteRecords.check_rows_since`` as it was before generation seals (the code this replaced): every
    row added since the handle's last check, fetched into Python and checked by its own tag."""
    with self.read_view():
        latest = self.generation
        if latest == self._checked_generation:
            return 0
        query = (
            "SELECT id, tenant, task, label, tags, extra, source, added_gen, mac FROM entries"
            " WHERE added_gen > ?"
        )
        checked = self.auth.check_rows(self.conn.execute(query, (self._checked_generation,)))
    self._checked_generation = latest
    return checked


def _fresh_first_query(path: Path, keys: KeyRing, one: np.ndarray) -> tuple[float, float, int]:
    """A new read-only handle's first filtered search -> (seconds of the bulk check, seconds of the search
    after it, rows checked one by one)."""
    with RehearsalMemory.open(path, keys=keys, read_only=True) as mem:
        catalog = mem._records
        assert isinstance(catalog, SqliteRecords)
        t = time.perf_counter()
        by_row = catalog.check_rows_since()
        check_s = time.perf_counter() - t
        t = time.perf_counter()
        mem.search_vectors(one, 10, where={"task": "t1"})
        return check_s, time.perf_counter() - t, by_row


def _run(args: argparse.Namespace, path: Path) -> None:
    centres = np.random.default_rng(0).standard_normal((1_000, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    keys = _keys(path)
    if not (path / "memory.json").exists():
        _build(args, path, keys, centres)
    if args.build_only:
        return
    result: dict[str, Any] = {"load_average_at_start": os.getloadavg()[0]}

    # A store written before generation seals is sealed by its first writer (after a row-by-row check).
    t = time.perf_counter()
    RehearsalMemory.open(path, keys=keys).close()
    result["writer_open_s (seals a store written before seals, once)"] = round(time.perf_counter() - t, 3)

    t = time.perf_counter()
    mem = RehearsalMemory.open(path, keys=keys, read_only=True)
    result["reader_open_s"] = round(time.perf_counter() - t, 3)
    entries = len(mem)
    mem.close()
    result = {"entries": entries, "dim": DIM, **result}

    one = _clustered(np.random.default_rng(1), centres, 1)
    many = _clustered(np.random.default_rng(2), centres, 32)

    # The first metadata-selecting query of a handle, row by row (the code before generation seals) and
    # with the seals, alternately on fresh handles.
    since = SqliteRecords.check_rows_since
    row_by_row: list[float] = []
    sealed: list[float] = []
    searches: list[float] = []
    for _ in range(args.first_rounds):
        SqliteRecords.check_rows_since = _row_by_row_check  # type: ignore[method-assign]
        try:
            check_s, search_s, by_row = _fresh_first_query(path, keys, one)
        finally:
            SqliteRecords.check_rows_since = since  # type: ignore[method-assign]
        assert by_row == entries, by_row
        row_by_row.append(check_s)
        searches.append(search_s)
        check_s, search_s, by_row = _fresh_first_query(path, keys, one)
        assert by_row == 0, by_row
        sealed.append(check_s)
        searches.append(search_s)
    result["bulk check of every row s, row by row (before)"] = [round(x, 3) for x in row_by_row]
    result["bulk check of every row s, on the seals (after)"] = [round(x, 3) for x in sealed]
    ratio = statistics.median(row_by_row) / statistics.median(sealed)
    result["bulk check speed-up (medians)"] = round(ratio, 2)
    result["the first filtered search after the check s"] = [round(x, 3) for x in searches]

    mem = RehearsalMemory.open(path, keys=keys, read_only=True)
    mem.search_vectors(one, 10, where={"task": "t1"})
    cases: dict[str, Callable[[], Any]] = {
        "search_1_query_ms": lambda: mem.search_vectors(one, 10),
        "search_32_queries_ms": lambda: mem.search_vectors(many, 10),
        "filtered_search_1_query_ms": lambda: mem.search_vectors(one, 10, where={"task": "t1"}),
        "filtered_search_32_queries_ms": lambda: mem.search_vectors(many, 10, where={"label": 3}),
        "get_texts_of_10_hits_ms": lambda: mem.get_texts([h.id for h in mem.search_vectors(one, 10)[0]]),
    }
    checked = CatalogAuthenticator.check_row
    on: dict[str, list[float]] = {name: [] for name in cases}
    off: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, fn in cases.items():
            on[name].append(_median_ms(fn, args.repeats))
            # Unchecked: no hit's row tag checked and no look for rows to check before a filter.
            CatalogAuthenticator.check_row = lambda self, values, tag: None  # type: ignore[method-assign]
            SqliteRecords.check_rows_since = lambda self: 0  # type: ignore[method-assign]
            try:
                off[name].append(_median_ms(fn, args.repeats))
            finally:
                CatalogAuthenticator.check_row = checked  # type: ignore[method-assign]
                SqliteRecords.check_rows_since = since  # type: ignore[method-assign]
    for name in cases:
        a, b = statistics.median(on[name]), statistics.median(off[name])
        result[f"{name} checked"] = round(a, 3)
        result[f"{name} unchecked"] = round(b, 3)
        result[f"{name} ratio"] = round(a / b, 3)

    # Does the check recur per generation? A writer commits 1,000 entries; the open reader's next filtered
    # search checks those rows only. The writer then deletes them again (the store keeps its size).
    rng = np.random.default_rng(3)
    with RehearsalMemory.open(path, keys=keys) as writer:
        t = time.perf_counter()
        added = writer.add(
            [f"late entry {j}" for j in range(1_000)],
            vectors=_clustered(rng, centres, 1_000),
            metadata=[{"task": "t1", "label": j % 7} for j in range(1_000)],
        )
        result["writer add 1,000 entries s"] = round(time.perf_counter() - t, 3)
    reader = mem._records
    assert isinstance(reader, SqliteRecords)
    t = time.perf_counter()
    result["reader's next check: rows checked one by one"] = reader.check_rows_since()
    result["reader's next check after that commit s"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    mem.search_vectors(one, 10, where={"task": "t2"})
    result["reader's next filtered search (a new filter) s"] = round(time.perf_counter() - t, 3)
    with RehearsalMemory.open(path, keys=keys) as writer:
        t = time.perf_counter()
        writer.delete(list(added))
        result["writer delete of them s (re-seals their generation)"] = round(time.perf_counter() - t, 3)
    mem.close()
    result["load_average_at_end"] = os.getloadavg()[0]
    print_and_save(result, args.out)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    main()
