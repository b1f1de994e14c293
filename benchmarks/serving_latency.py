"""A deployment's single-request latency as experts are added: ``rehearsal predict``'s path, one request
at a time, model kept loaded, after the warm-up request.

The deployment serves the bundled MiniLM classifier (``expert-growth``): version 1 knows the tweets'
three sentiment labels; each of three updates brings another domain (movies, products, editorials) with
labels of its own (``<domain>-negative`` ...), which the novelty check turns into a new expert adapter. After
each version, ``--requests`` held-out texts of every domain are answered by ``predict_requests`` (routing
by the memory's k-NN vote, the adapter switch, tokenising, the forward pass), and the p50/p95 latencies
are read from its summary. Bars (issue 30): p50 <= 50 ms with one expert; with three <= 2x that.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/serving_latency.py --threads 1

Prints a table and writes ``benchmarks/results/serving_latency.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from _harness import provenance, write_results

from rehearsal.crypto.keys import KeyRing
from rehearsal.deployment.init import init_deployment
from rehearsal.deployment.predict import predict_requests
from rehearsal.deployment.update import update
from rehearsal.embedding import load_encoder
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.runner.sentiment import load_sentiment_stream
from rehearsal.threads import size_thread_pools

OPTIONS = {
    "epochs": 1,
    "learning_rate": 1e-3,
    "batch_size": 16,
    "max_length": 48,
    "novelty_threshold": 0.5,  # every new domain here is a new expert (the question is latency, not routing)
    "check_learning": False,
    "gate": {"max_drop": 1.0, "margin": 1.0},
}


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=20, help="training examples per label and domain")
    parser.add_argument("--requests", type=int, default=15, help="requests per domain and version")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    plan = size_thread_pools(args.threads)
    record = provenance(threads=plan.threads, train=args.train, requests=args.requests)
    stream = load_sentiment_stream(max_train_per_class=args.train, max_test_per_class=args.requests // 3 + 1)
    keys = KeyRing.generate()
    requests = [{"text": ex.text} for task in stream.tasks for ex in task.test]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        first = stream.tasks[0]
        with RehearsalMemory.create(folder / "mem", keys=keys, encoder=load_encoder()) as memory:
            memory.add(
                [e.text for e in first.train],
                metadata=[{"task": e.task, "label": e.label} for e in first.train],
            )
        dep = folder / "dep"
        init_deployment(dep, memory=folder / "mem", strategy="expert-growth", keys=keys, options=OPTIONS)
        data = _write(folder / "requests.jsonl", requests)
        for version in range(1, len(stream.tasks) + 1):
            if version > 1:
                task = stream.tasks[version - 1]
                batch = [
                    {"text": e.text, "label": f"{task.name}-{e.label}", "task": e.task} for e in task.train
                ]
                done = update(dep, _write(folder / f"{task.name}.jsonl", batch), keys=keys)
                decision = (done.novelty or {}).get("decision")
            else:
                decision = None
            summary = predict_requests(dep, data, keys=keys)
            row = {
                "version": summary.get("version", version),
                "experts": version - 1,
                "novelty_decision": decision,
                "requests": len(requests),
                "p50_ms": summary["latency"]["p50_ms"],
                "p95_ms": summary["latency"]["p95_ms"],
                "warmup_s": summary.get("warmup_seconds"),
            }
            rows.append(row)
            print(
                f"v{row['version']} experts {row['experts']} ({decision}): p50 {row['p50_ms']:.1f} ms, "
                f"p95 {row['p95_ms']:.1f} ms",
                flush=True,
            )
    one = next((r for r in rows if r["experts"] == 1), None)
    three = next((r for r in rows if r["experts"] == 3), None)
    bars = {
        "p50_one_expert_ms": None if one is None else one["p50_ms"],
        "p50_one_expert_le_50ms": None if one is None else one["p50_ms"] <= 50.0,
        "p50_three_over_one": None if one is None or three is None else three["p50_ms"] / one["p50_ms"],
    }
    print("| version | experts | p50 ms | p95 ms |\n|---|---|---|---|")
    for r in rows:
        print(f"| v{r['version']} | {r['experts']} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} |")
    print(bars)
    print(f"wrote {write_results('serving_latency', {'versions': rows, 'bars': bars}, record)}")


if __name__ == "__main__":
    main()
