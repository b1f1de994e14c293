"""Write the small version-1 memories that tests/test_format_migration.py opens and migrates.

Run with the format-1 code (the commit before format 2, e.g. ``git worktree add /tmp/v1 c68ebb8``), from
that checkout's root: ``python <this repo>/tests/data/make_v1_store.py <this repo>/tests/data/v1_store``.
It writes two memories (an encrypted one with texts, an embedding-only one without keys) and
``expected.json``: what the format-1 code answered, which the migrated stores must answer too. The master
key is a fixed test key (bytes 0..31), never a real one.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np

from rehearsal.crypto.keys import KeyRing
from rehearsal.memory.facade import RehearsalMemory

TEST_KEY = bytes(range(32))
DIM = 8
N = 24


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def main(out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    rng = np.random.default_rng(13)
    vectors = unit(rng, N)
    queries = unit(rng, 3)
    meta = [
        {"task": f"t{i % 2}", "label": i % 3, "tags": ["x"] if i % 2 else [], "note": f"n{i}"}
        for i in range(N)
    ]
    keys = KeyRing.from_bytes(TEST_KEY)
    expected: dict[str, object] = {}
    with RehearsalMemory.create(out / "encrypted", keys=keys, dim=DIM, encoder_name="synthetic-8") as mem:
        half = N // 2
        mem.add(
            [f"text {i}" for i in range(half)], vectors=vectors[:half], metadata=meta[:half], tenant="alice"
        )
        mem.add(
            [f"text {i}" for i in range(half, N)], vectors=vectors[half:], metadata=meta[half:], tenant="bob"
        )
        mem.delete([3])
        expected["encrypted"] = {
            "len": len(mem),
            "generation": mem.generation,
            "search": [[h.id for h in row] for row in mem.search_vectors(queries, 5)],
            "search_bob": [
                [h.id for h in row] for row in mem.search_vectors(queries, 5, where={"tenant": "bob"})
            ],
            "texts": mem.get_texts([0, 5, 20]),
            "labels": {str(i): r.label for i, r in mem.entries(list(range(N))).items()},
        }
    with RehearsalMemory.create(
        out / "plain", embedding_only=True, dim=DIM, encoder_name="synthetic-8"
    ) as mem:
        mem.add(vectors=vectors, metadata=meta, sources=[f"doc-{i}" for i in range(N)], tenant="alice")
        expected["plain"] = {
            "len": len(mem),
            "generation": mem.generation,
            "search": [[h.id for h in row] for row in mem.search_vectors(queries, 5)],
            "labels": {str(i): r.label for i, r in mem.entries(list(range(N))).items()},
        }
    expected["queries"] = queries.tolist()
    (out / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
