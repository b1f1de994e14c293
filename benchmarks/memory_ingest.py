"""Ingest throughput: ``memory.add(texts)`` (embed + seal + durable commit) against bare ``encoder.encode``.

Both run on the same real texts (every train and test gloss of the bundled WordNet stream) in the same
process. The two are interleaved chunk by chunk (encode a chunk bare and add the same chunk to the memory,
alternating which goes first), so a change in background load hits both sides alike.
Bar: memory / bare >= 0.90.

    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 .venv/bin/python benchmarks/memory_ingest.py
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from _report import print_and_save  # benchmarks/ is on sys.path when run as a script

from rehearsal.crypto.keys import KeyRing
from rehearsal.embedding import load_encoder
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.runner.tasks import load_wordnet_stream

HERE = Path(__file__).resolve().parent
BAR = 0.90


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunk", type=int, default=1024, help="texts per memory.add call")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N texts (smoke runs)")
    parser.add_argument("--out", type=Path, default=HERE / "out" / "memory_ingest.json")
    args = parser.parse_args()

    stream = load_wordnet_stream()
    texts = [ex.text for task in stream.tasks for ex in (*task.train, *task.test)]
    if args.limit:
        texts = texts[: args.limit]
    metadata = [
        {"task": ex.task, "label": ex.label} for task in stream.tasks for ex in (*task.train, *task.test)
    ]
    encoder = load_encoder()
    encoder.encode(texts[:256])  # warm-up: first-call allocations are no one's overhead

    bare_s = memory_s = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        mem = RehearsalMemory.create(Path(tmp) / "mem", keys=KeyRing.generate(), encoder=encoder)
        for number, start in enumerate(range(0, len(texts), args.chunk)):
            chunk = texts[start : start + args.chunk]
            # Alternate which side goes first, so warm caches favour neither.
            for side in ("bare", "memory") if number % 2 == 0 else ("memory", "bare"):
                t0 = time.perf_counter()
                if side == "bare":
                    encoder.encode(chunk)
                else:
                    mem.add(chunk, metadata=metadata[start : start + args.chunk], tenant="wordnet")
                elapsed = time.perf_counter() - t0
                if side == "bare":
                    bare_s += elapsed
                else:
                    memory_s += elapsed
        t3 = time.perf_counter()
        mem.close()
        close_s = time.perf_counter() - t3
        with mem.reader()() as reopened:  # a fresh read-only handle with the same keys
            entries = len(reopened)

    n = len(texts)
    result = {
        "texts": n,
        "chunk": args.chunk,
        "bare_encode_texts_per_s": round(n / bare_s, 1),
        "memory_add_texts_per_s": round(n / memory_s, 1),
        "ratio": round(bare_s / memory_s, 4),
        "memory_overhead_ms_per_1k_texts": round(1000 * (memory_s - bare_s) / n * 1000, 1),
        "close_s": round(close_s, 3),
        "entries_after_reopen": entries,
        "bar": BAR,
        "pass": bare_s / memory_s >= BAR,
    }
    print_and_save(result, args.out)


if __name__ == "__main__":
    main()
