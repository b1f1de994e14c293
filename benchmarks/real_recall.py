"""Recall of the IVF index on real MiniLM embeddings of the bundled WordNet glosses.

At the bundled data's size (12k entries) a memory searches exactly (``IDMap,Flat``), so recall is 1 by
construction; this forces the IVF index a larger memory would use onto the real vectors, to check that the
nprobe calibrated at build time holds recall@10 >= 0.95 on real text embeddings (fresh queries), not only
on synthetic clusters. Queries are
the test glosses; ground truth is exact inner-product search in numpy.

    HF_HUB_OFFLINE=1 python benchmarks/real_recall.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np

from rehearsal.runner.tasks import load_wordnet_stream
from rehearsal.store.faiss.index import FaissIndex

OUT = Path(__file__).parent / "out"


def vectors(split: str) -> np.ndarray:
    """MiniLM vectors of every bundled gloss of a split, cached under benchmarks/out/."""
    cache = OUT / f"wordnet_minilm_{split}.npy"
    if cache.exists():
        return np.load(cache)
    from rehearsal.embedding import load_encoder

    stream = load_wordnet_stream()
    texts = [e.text for task in stream.tasks for e in getattr(task, split)]
    result = load_encoder().encode(texts)
    OUT.mkdir(exist_ok=True)
    np.save(cache, result)
    return result


def main() -> int:
    data, queries = vectors("train"), vectors("test")
    exact = np.argsort(-(queries @ data.T), axis=1)[:, :10]
    ids = np.arange(len(data), dtype=np.int64)
    rows = []
    print(f"{len(data):,} real MiniLM vectors, {len(queries):,} queries\n")
    print(f"{'spec':<16}{'nprobe':>8}{'recall@10':>11}")
    for nlist in (64, 128, 256):
        index = FaissIndex.build(data, ids, spec=f"IVF{nlist},Flat")
        calibrated = index.nprobe
        for nprobe in sorted({8, 16, 32, 64, calibrated}):
            index.nprobe = nprobe
            _, found = index.search(queries, 10)
            recall = float(np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, exact, strict=True)]))
            default = nprobe == calibrated
            rows.append(
                {"spec": f"IVF{nlist},Flat", "nprobe": nprobe, "recall_at_10": recall, "default": default}
            )
            mark = "  (calibrated at build)" if default else ""
            print(f"{'IVF' + str(nlist) + ',Flat':<16}{nprobe:>8}{recall:>11.3f}{mark}")
    OUT.mkdir(exist_ok=True)
    (OUT / "real_recall.json").write_text(
        json.dumps({"n": len(data), "queries": len(queries), "runs": rows}, indent=2)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
