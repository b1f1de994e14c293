"""The encoder's arithmetic for ingest: texts/s of bf16 autocast against the fp32 reference, and how far
its neighbours move (recall@10 of each text's ten nearest against fp32's, mean cosine to the fp32 vector).

Real texts (every gloss of the bundled WordNet stream, capped at ``--texts``), the packaged MiniLM, one
process. The backends take turns chunk by chunk (which goes first alternates) so a change in background
load hits both alike; the figure is the ratio of their summed times.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/encoder_backend.py --threads 1
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/encoder_backend.py --threads 2

Prints a table and writes ``benchmarks/results/encoder_backend_<threads>t.json``.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
from _harness import provenance, write_results

from rehearsal.embedding import cpu_has_native_bf16, load_encoder
from rehearsal.runner.tasks import load_wordnet_stream
from rehearsal.threads import size_thread_pools


def recall_at(reference: np.ndarray, other: np.ndarray, k: int = 10) -> float:
    """Mean share of each row's k nearest rows (itself excluded) under ``reference`` found under ``other``."""

    def nearest(x: np.ndarray) -> np.ndarray:
        sims = x @ x.T
        np.fill_diagonal(sims, -np.inf)
        return np.argsort(-sims, axis=1)[:, :k]

    a, b = nearest(reference), nearest(other)
    return float(np.mean([len(set(r) & set(s)) / k for r, s in zip(a, b, strict=True)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=3000)
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    plan = size_thread_pools(args.threads)
    record = provenance(threads=plan.threads, native_bf16=cpu_has_native_bf16())
    stream = load_wordnet_stream()
    texts = [ex.text for task in stream.tasks for ex in [*task.train, *task.test]][: args.texts]
    encoders = {"fp32": load_encoder(), "bf16": load_encoder(backend="bf16")}
    for encoder in encoders.values():
        encoder.encode(texts[:64])  # warm: first-call allocations are not throughput
    seconds = dict.fromkeys(encoders, 0.0)
    vectors: dict[str, list[np.ndarray]] = {name: [] for name in encoders}
    for i, start in enumerate(range(0, len(texts), args.chunk)):
        chunk = texts[start : start + args.chunk]
        order = list(encoders) if i % 2 == 0 else list(reversed(encoders))
        for name in order:
            began = time.perf_counter()
            vectors[name].append(encoders[name].encode(chunk))
            seconds[name] += time.perf_counter() - began
    fp32, bf16 = (np.concatenate(vectors[n]) for n in ("fp32", "bf16"))
    rows = {name: {"texts_per_s": len(texts) / seconds[name], "seconds": seconds[name]} for name in encoders}
    rows["bf16"]["speedup_vs_fp32"] = seconds["fp32"] / seconds["bf16"]
    rows["bf16"]["recall_at_10_vs_fp32"] = recall_at(fp32, bf16)
    rows["bf16"]["mean_cosine_to_fp32"] = float(np.mean(np.sum(fp32 * bf16, axis=1)))
    print(f"{len(texts)} texts, {plan.threads} thread(s), native bf16: {record['native_bf16']}")
    print("| backend | texts/s | x fp32 | recall@10 vs fp32 | cosine to fp32 |\n|---|---|---|---|---|")
    print(f"| fp32 | {rows['fp32']['texts_per_s']:.0f} | 1.00 | 1.000 | 1.0000 |")
    b = rows["bf16"]
    print(
        f"| bf16 | {b['texts_per_s']:.0f} | {b['speedup_vs_fp32']:.2f} | {b['recall_at_10_vs_fp32']:.3f} "
        f"| {b['mean_cosine_to_fp32']:.4f} |"
    )
    payload = {"texts": len(texts), "chunk": args.chunk, "backends": rows}
    path = write_results(f"encoder_backend_{plan.threads}t", payload, record)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
