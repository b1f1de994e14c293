"""Ingest throughput: ``memory.add(texts)`` (embed + seal + durable commit) against bare ``encoder.encode``.

Both run on the same real texts (every train and test gloss of the bundled WordNet stream) in the same
process. The two are interleaved chunk by chunk (encode a chunk bare and add the same chunk to the memory,
alternating which goes first), so a change in background load hits both sides alike.
Bar: memory / bare >= 0.90.

``--tenants N`` measures instead what a file of many tenants costs (issue 29): the same rows added in
batches of ``--chunk`` to two audited memories, one owned by a single tenant, the other by N tenants that
alternate row by row (the worst order for a writer that commits per run of one tenant), interleaved batch
by batch. With ``--embed`` each side's memory embeds its texts with MiniLM, as ``rehearsal ingest`` does;
without it the vectors are precomputed, seeded random unit rows, so the ratio is of what the tenants change
(sealing under N data keys, the inserts, the audit log) without the encoder's cost, which is the same on
both sides and hides it. Bar: mixed / single texts/s >= 0.80.

    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 .venv/bin/python benchmarks/memory_ingest.py
    .venv/bin/python benchmarks/memory_ingest.py --tenants 50 --rows 20000 --chunk 256 [--embed]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
from _harness import provenance, write_results
from _report import print_and_save  # benchmarks/ is on sys.path when run as a script

from rehearsal.crypto.keys import KeyRing
from rehearsal.embedding import load_encoder
from rehearsal.governance.audit_log import AuditLog, default_log_path
from rehearsal.governance.audited import AuditedMemory
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.runner.tasks import load_wordnet_stream

HERE = Path(__file__).resolve().parent
BAR = 0.90
TENANTS_BAR = 0.80


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunk", type=int, default=1024, help="texts per memory.add call")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N texts (smoke runs)")
    parser.add_argument("--out", type=Path, default=HERE / "out" / "memory_ingest.json")
    parser.add_argument("--tenants", type=int, default=0, help="compare N alternating tenants with one")
    parser.add_argument("--rows", type=int, default=20_000, help="rows added in the --tenants mode")
    parser.add_argument("--embed", action="store_true", help="--tenants mode: embed with MiniLM")
    parser.add_argument(
        "--repeats", type=int, default=1, help="--tenants mode: runs; the median is the figure"
    )
    parser.add_argument("--name", help="--tenants mode: also write results/<name>.json with provenance")
    args = parser.parse_args()
    if args.tenants:
        record = provenance(rows=args.rows, tenants=args.tenants, chunk=args.chunk, embed=args.embed)
        runs = [
            tenant_mix(args.rows, args.tenants, args.chunk, embed=args.embed) for _ in range(args.repeats)
        ]
        ratios = sorted(run["ratio"] for run in runs)
        median = ratios[len(ratios) // 2]
        print_and_save({**runs[-1], "ratios": ratios, "ratio_median": median}, args.out)
        if args.name:
            summary = {"runs": runs, "ratios": ratios, "ratio_median": median, "pass": median >= TENANTS_BAR}
            print(f"wrote {write_results(args.name, summary, record)}")
        return

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


def tenant_mix(rows: int, tenants: int, chunk: int, *, embed: bool) -> dict[str, object]:
    """Texts/s of ``rows`` rows owned by one tenant against the same rows owned by ``tenants`` alternating
    ones, each side behind its audit log as ``rehearsal ingest`` runs it."""
    stream = load_wordnet_stream()
    pool = [(ex.text, {"task": ex.task, "label": ex.label}) for t in stream.tasks for ex in t.train]
    texts = [pool[i % len(pool)][0] for i in range(rows)]
    metadata = [pool[i % len(pool)][1] for i in range(rows)]
    vectors = None if embed else np.random.default_rng(0).standard_normal((rows, 384)).astype(np.float32)
    encoder = load_encoder() if embed else None
    owners = {"single": ["t0"] * rows, "mixed": [f"t{i % tenants}" for i in range(rows)]}
    keys = KeyRing.generate()
    seconds = {"single": 0.0, "mixed": 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        memories = {}
        for side in seconds:
            folder = Path(tmp) / side
            if encoder is not None:
                mem = RehearsalMemory.create(folder, keys=keys, encoder=encoder)
            else:
                mem = RehearsalMemory.create(folder, keys=keys, dim=384, encoder_name="precomputed")
            memories[side] = AuditedMemory(
                mem, AuditLog.open(default_log_path(mem.folder), keys), actor="bench"
            )
        for number, start in enumerate(range(0, rows, chunk)):
            part = slice(start, start + chunk)
            for side in ("single", "mixed") if number % 2 == 0 else ("mixed", "single"):
                t0 = time.perf_counter()
                given = None if vectors is None else vectors[part]
                memories[side].add(
                    texts[part], metadata=metadata[part], tenant=owners[side][part], vectors=given
                )
                seconds[side] += time.perf_counter() - t0
        generations = {side: memories[side].generation for side in seconds}
        audit = {side: len(memories[side].log.entries()) for side in seconds}
        for audited_memory in memories.values():
            audited_memory.memory.close()
    ratio = seconds["single"] / seconds["mixed"]
    return {
        "rows": rows,
        "tenants": tenants,
        "chunk": chunk,
        "embedded": embed,
        "single_tenant_texts_per_s": round(rows / seconds["single"], 1),
        "mixed_tenants_texts_per_s": round(rows / seconds["mixed"], 1),
        "ratio": round(ratio, 4),
        "generations_single": generations["single"],
        "generations_mixed": generations["mixed"],
        "audit_entries_single": audit["single"],
        "audit_entries_mixed": audit["mixed"],
        "bar": TENANTS_BAR,
        "pass": ratio >= TENANTS_BAR,
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


if __name__ == "__main__":
    main()
