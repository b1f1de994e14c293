"""Routing accuracy of the memory as a task gate: k-NN vote over the tasks of each input's nearest memories.

A memory holds every WordNet training gloss (MiniLM vectors, task metadata); each test gloss is routed to
the task whose adapter should serve it (``rehearsal.methods.adapters.AdapterRouter``). Accuracy is the
share of test inputs routed to their own task's adapter; a fallback (vote share under the threshold) counts as
a miss. "precision" is the accuracy among inputs that were not sent to the fallback, "coverage" their share.
Pooled routing (``route_pooled``) routes a group of test glosses known to share a task (a session, an
evaluation batch) with one vote: groups of ``--groups`` sizes drawn at random within each task (seed 0).
MiniLM vectors are computed once and cached in ``benchmarks/out/wordnet_minilm_{train,test}.npy``.

``--gate`` also trains ``rehearsal.methods.router.TaskGate`` from an encrypted memory holding the same
training glosses (texts + task; MiniLM fine-tuned with one output per task, 2 epochs: ~7 min on 2 CPU cores)
and routes the test glosses by its softmax, at the same thresholds.

    python benchmarks/routing.py                     # k=16, thresholds 0.0 and 0.6
    python benchmarks/routing.py --k 8 32 --thresholds 0.0 0.5 0.6 0.8
    python benchmarks/routing.py --gate --thresholds 0.0 0.6 0.8
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np

from rehearsal.embedding import load_encoder
from rehearsal.runner.tasks import Example, load_wordnet_stream

OUT = Path(__file__).parent / "out"


def cached_vectors(split: str, examples: list[Example]) -> np.ndarray:
    """MiniLM vectors of ``examples``, read from the cache when it matches their count."""
    path = OUT / f"wordnet_minilm_{split}.npy"
    if path.exists():
        vectors = np.load(path)
        if len(vectors) == len(examples):
            return vectors
    started = time.perf_counter()
    vectors = load_encoder().encode([ex.text for ex in examples])
    OUT.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    print(f"encoded {len(examples)} {split} texts in {time.perf_counter() - started:.0f} s -> {path}")
    return vectors


def score(routed: list[str], true_tasks: list[str], **settings: Any) -> dict[str, Any]:
    """Accuracy, fallback share, precision and per-task accuracy of one routing; printed as a row."""
    correct = [r == t for r, t in zip(routed, true_tasks, strict=True)]
    per_task = {
        name: float(np.mean([c for c, t in zip(correct, true_tasks, strict=True) if t == name]))
        for name in dict.fromkeys(true_tasks)
    }
    kept = [c for c, r in zip(correct, routed, strict=True) if r != "merged"]
    row = {
        **settings,
        "accuracy": float(np.mean(correct)),
        "fallback_share": Counter(routed)["merged"] / len(routed),
        "precision": float(np.mean(kept)) if kept else float("nan"),
        "per_task": per_task,
    }
    cells = " ".join(f"{name}={acc:.3f}" for name, acc in per_task.items())
    label = " ".join(f"{key}={value}" for key, value in settings.items())
    figures = f"accuracy {row['accuracy']:.3f} fallback {row['fallback_share']:.3f}"
    print(f"{label}: {figures} precision {row['precision']:.3f}  {cells}", flush=True)
    return row


def measure_gate(
    train: list[Example], test: list[Example], train_vectors: np.ndarray, args: argparse.Namespace, tmp: Path
) -> list[dict[str, Any]]:
    """Train a TaskGate from an encrypted memory of the training glosses; route the test glosses."""
    from rehearsal.crypto.keys import KeyRing
    from rehearsal.memory.facade import RehearsalMemory
    from rehearsal.methods.router import TaskGate

    with RehearsalMemory.create(tmp / "texts", keys=KeyRing.generate()) as memory:
        memory.add(
            [ex.text for ex in train], metadata=[{"task": ex.task} for ex in train], vectors=train_vectors
        )
        started = time.perf_counter()
        gate = TaskGate.from_memory(memory, epochs=args.gate_epochs, seed=0)
        trained_s = time.perf_counter() - started
    print(f"gate trained on {len(train)} memory texts in {trained_s:.0f} s", flush=True)
    texts, true_tasks = [ex.text for ex in test], [ex.task for ex in test]
    return [
        score(
            gate.route(texts, threshold=t, fallback="merged"),
            true_tasks,
            threshold=t,
            train_s=round(trained_s),
        )
        for t in args.thresholds
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, nargs="+", default=[16])
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.0, 0.6])
    parser.add_argument("--groups", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--encode-only", action="store_true", help="fill the vector cache and stop")
    parser.add_argument("--gate", action="store_true", help="also train and measure the TaskGate router")
    parser.add_argument("--gate-epochs", type=float, default=2.0)
    args = parser.parse_args()

    stream = load_wordnet_stream()
    train = [ex for task in stream.tasks for ex in task.train]
    test = [ex for task in stream.tasks for ex in task.test]
    train_vectors = cached_vectors("train", train)
    test_vectors = cached_vectors("test", test)
    if args.encode_only:
        return

    from rehearsal.memory.facade import RehearsalMemory
    from rehearsal.methods.router import AdapterRouter

    true_tasks = [ex.task for ex in test]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        memory = RehearsalMemory.create(Path(tmp) / "mem", embedding_only=True, dim=train_vectors.shape[1])
        memory.add(
            metadata=[{"task": ex.task} for ex in train],
            vectors=train_vectors,
            sources=[f"train:{i}" for i in range(len(train))],
        )
        print(f"memory: {len(memory)} train glosses; {len(test)} test glosses")
        for k in args.k:
            for threshold in args.thresholds:
                router = AdapterRouter(memory, k=k, threshold=threshold, fallback="merged")
                rows.append(score(router.route(test_vectors), true_tasks, k=k, threshold=threshold))
        pooled_rows = []
        rng = np.random.default_rng(0)
        for k in args.k:
            router = AdapterRouter(memory, k=k, threshold=0.0, fallback="merged")
            for size in args.groups:
                hits = total = 0
                for task in stream.tasks:
                    rows_of_task = [i for i, t in enumerate(true_tasks) if t == task.name]
                    order = rng.permutation(rows_of_task)
                    for start in range(0, len(order) - size + 1, size):
                        hits += router.route_pooled(test_vectors[order[start : start + size]]) == task.name
                        total += 1
                pooled_rows.append({"k": k, "group": size, "groups": total, "accuracy": hits / total})
                print(f"pooled k={k:>2} group of {size:>2}: accuracy {hits / total:.3f} over {total} groups")
        memory.close()
        gate_rows = measure_gate(train, test, train_vectors, args, Path(tmp)) if args.gate else []
    OUT.mkdir(parents=True, exist_ok=True)
    result = {
        "n_train": len(train),
        "n_test": len(test),
        "rows": rows,
        "pooled": pooled_rows,
        "gate": gate_rows,
    }
    (OUT / "routing.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
