"""The encoder's arithmetic for ingest: texts/s of each backend against the fp32 reference, and how far
its neighbours move (recall@10 of each text's ten nearest against fp32's, mean cosine to the fp32 vector).

Real texts, the packaged MiniLM through ``load_encoder(backend=...)`` (the code a memory embeds with), one
process. The backends take turns chunk by chunk (the order rotates) so a change in background load hits
all alike; the figure is the ratio of their summed times. By default every gloss of the bundled WordNet
stream (capped at ``--texts``); ``--real`` takes the ingest bar's set instead (WordNet glosses then the
sentiment texts, the int8 calibration glosses left out; ``encoder_int8.real_texts``).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/encoder_backend.py --threads 1
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/encoder_backend.py --threads 2
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/encoder_backend.py --threads 1 --real --texts 20000 \
        --chunk 1000 --backends fp32 bf16 openvino --name encoder_openvino_1t

Prints a table and writes ``benchmarks/results/encoder_backend_<threads>t.json`` (or ``--name``).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
from _harness import provenance, write_results
from encoder_int8 import real_texts, recall_at

from rehearsal.embedding import cpu_has_native_bf16, load_encoder
from rehearsal.runner.tasks import load_wordnet_stream
from rehearsal.threads import size_thread_pools


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=3000)
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--backends", nargs="+", default=["fp32", "bf16"], help="fp32 first: the reference")
    parser.add_argument("--real", action="store_true", help="the ingest bar's 20k real texts")
    parser.add_argument("--name", default=None, help="results/<name>.json")
    args = parser.parse_args()
    if args.backends[0] != "fp32":
        parser.error("the first backend is the reference: fp32")
    plan = size_thread_pools(args.threads)
    record = provenance(threads=plan.threads, native_bf16=cpu_has_native_bf16(), backends=args.backends)
    if args.real:
        texts = real_texts(args.texts)
    else:
        stream = load_wordnet_stream()
        texts = [ex.text for task in stream.tasks for ex in [*task.train, *task.test]][: args.texts]
    encoders = {name: load_encoder(backend=name) for name in args.backends}
    for encoder in encoders.values():
        encoder.encode(texts[:64])  # warm: first-call allocations are not throughput
    seconds = dict.fromkeys(encoders, 0.0)
    vectors: dict[str, list[np.ndarray]] = {name: [] for name in encoders}
    names = list(encoders)
    for i, start in enumerate(range(0, len(texts), args.chunk)):
        chunk = texts[start : start + args.chunk]
        for name in names[i % len(names) :] + names[: i % len(names)]:
            began = time.perf_counter()
            vectors[name].append(encoders[name].encode(chunk))
            seconds[name] += time.perf_counter() - began
    joined = {name: np.concatenate(v) for name, v in vectors.items()}
    fp32 = joined["fp32"]
    rows: dict[str, dict[str, float]] = {}
    print(f"{len(texts)} texts, {plan.threads} thread(s), native bf16: {record['native_bf16']}")
    print("| backend | texts/s | x fp32 | recall@10 vs fp32 | cosine to fp32 |\n|---|---|---|---|---|")
    for name in names:
        row = {"texts_per_s": len(texts) / seconds[name], "seconds": seconds[name]}
        if name != "fp32":
            row["speedup_vs_fp32"] = seconds["fp32"] / seconds[name]
            row["recall_at_10_vs_fp32"] = recall_at(fp32, joined[name])
            row["mean_cosine_to_fp32"] = float(np.mean(np.sum(fp32 * joined[name], axis=1)))
        rows[name] = row
        print(
            f"| {name} | {row['texts_per_s']:.0f} | {row.get('speedup_vs_fp32', 1.0):.2f} "
            f"| {row.get('recall_at_10_vs_fp32', 1.0):.3f} | {row.get('mean_cosine_to_fp32', 1.0):.4f} |"
        )
    payload = {"texts": len(texts), "chunk": args.chunk, "backends": rows}
    path = write_results(args.name or f"encoder_backend_{plan.threads}t", payload, record)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
