"""Per-query cost of each predictor at memories of 10k and 100k entries, beside one encoder forward pass.

Features are synthetic (45 classes of unit-variance clusters in 384 dimensions, as MiniLM's pooled output);
each predictor is fitted once on the whole memory (``ncm``/``lda`` need only class means and a covariance,
``knn``/``local`` keep every entry) and then answers ``--queries`` single queries one at a time, as a
server would. The encoder's own single-text forward pass (the bundled MiniLM as a classifier, 32 tokens)
is measured in the same run: a query costs that plus the predictor's share.

    .venv/bin/python benchmarks/predictors.py --latency
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from _harness import provenance, write_results

from rehearsal.config import PREDICTOR_NAMES
from rehearsal.embedding import default_model_path
from rehearsal.methods.predictors import encoder_features, make_predictor

SIZES = (10_000, 100_000)
CLASSES, DIM, QUERIES = 45, 384, 200


def _memory(n: int, rng: np.random.Generator) -> tuple[torch.Tensor, list[int]]:
    centres = rng.normal(size=(CLASSES, DIM)).astype(np.float32)
    labels = rng.integers(0, CLASSES, size=n)
    rows = centres[labels] + rng.normal(size=(n, DIM)).astype(np.float32)
    return torch.from_numpy(rows), labels.tolist()


def _per_query_ms(step: Any, queries: torch.Tensor) -> float:
    step(queries[:1])  # warm-up
    started = time.perf_counter()
    for row in range(len(queries)):
        step(queries[row : row + 1])
    return (time.perf_counter() - started) * 1000.0 / len(queries)


def _encoder_ms() -> float:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = str(default_model_path())
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=CLASSES)
    tokenizer = AutoTokenizer.from_pretrained(path)
    text = ["a domesticated carnivorous mammal that typically has a long snout and an acute sense of smell"]
    encoder_features(model, tokenizer, text, batch_size=1, max_length=32)  # warm-up
    started = time.perf_counter()
    for _ in range(QUERIES // 4):
        encoder_features(model, tokenizer, text, batch_size=1, max_length=32)
    return (time.perf_counter() - started) * 1000.0 / (QUERIES // 4)


def main(threads: int) -> int:
    run = provenance(threads=threads, queries=QUERIES, classes=CLASSES, dim=DIM)
    rng = np.random.default_rng(0)
    head = torch.nn.Linear(DIM, CLASSES)
    encoder = _encoder_ms()
    table: dict[str, dict[str, Any]] = {}
    for n in SIZES:
        features, labels = _memory(n, rng)
        queries, _ = _memory(QUERIES, rng)
        for name in PREDICTOR_NAMES:
            predictor = make_predictor(name)
            started = time.perf_counter()
            predictor.fit(features, labels, head=head)
            fit_s = time.perf_counter() - started
            ms = _per_query_ms(predictor.predict, queries)
            table.setdefault(name, {})[str(n)] = {
                "fit_seconds": round(fit_s, 3),
                "predictor_ms_per_query": round(ms, 3),
                "total_ms_per_query": round(ms + encoder, 3),
            }
    print(f"encoder forward, one text of 32 tokens: {encoder:.2f} ms ({threads} thread(s))")
    print("| predictor | " + " | ".join(f"{n:,}: fit s / predictor ms / total ms" for n in SIZES) + " |")
    print("|---|" + "---|" * len(SIZES))
    for name, cells in table.items():
        shown = " | ".join(
            f"{c['fit_seconds']} / {c['predictor_ms_per_query']} / {c['total_ms_per_query']}"
            for c in cells.values()
        )
        print(f"| {name} | {shown} |")
    path = write_results(
        "predictors_latency", {"encoder_ms_per_query": round(encoder, 3), "table": table}, run
    )
    print(f"wrote {path}")
    return 0
