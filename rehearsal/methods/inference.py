"""Predicting labels with a sequence classifier, for the run loop's evaluation after every phase.

``predict_labels`` is the plain argmax over the head, optionally restricted to some classes (a task's
expert predicts among its own task's classes); ``embed_texts`` gives the memory encoder's vectors of
evaluation texts, cached in-process so a benchmark that evaluates the same test sets after every phase
embeds them once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from rehearsal.embedding import Encoder

__all__ = ["batch_logits", "embed_texts", "evaluate_accuracy", "predict_labels"]


def batch_logits(
    model: Any, tokenizer: Any, texts: Sequence[str], *, batch_size: int, max_length: int
) -> Any:
    """(n, outputs) float32 tensor on CPU: ``model``'s logits for ``texts``, in eval mode, batch by batch
    on the model's device. The one inference loop of evaluation, calibration and the task gate."""
    import torch

    device = next(model.parameters()).device
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                list(texts[start : start + batch_size]),
                truncation=True,
                max_length=max_length,
                padding=True,
                return_tensors="pt",
            ).to(device)
            out.append(model(**batch).logits.float().cpu())
    return torch.cat(out)


def predict_labels(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    batch_size: int,
    max_length: int,
    allowed: Sequence[int] | None = None,
) -> np.ndarray:
    """(n,) int64: the argmax of ``model``'s logits for each text, over ``allowed`` classes (all if None)."""
    if not len(texts):
        return np.empty(0, dtype=np.int64)
    logits: np.ndarray = batch_logits(
        model, tokenizer, texts, batch_size=batch_size, max_length=max_length
    ).numpy()
    if allowed is not None:
        mask = np.full(logits.shape[-1], -np.inf, dtype=logits.dtype)
        mask[list(allowed)] = 0.0
        logits = logits + mask
    return np.asarray(logits.argmax(axis=-1), dtype=np.int64)


def evaluate_accuracy(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    labels: Sequence[int],
    *,
    batch_size: int,
    max_length: int,
) -> float:
    """Share of ``texts`` whose argmax over every class of the head is their label (0.0 for none)."""
    if not len(texts):
        return 0.0
    predicted = predict_labels(model, tokenizer, texts, batch_size=batch_size, max_length=max_length)
    return float(np.mean(predicted == np.asarray(labels)))


_vector_cache: dict[str, np.ndarray] = {}


def embed_texts(texts: Sequence[str], encoder: Encoder) -> np.ndarray:
    """Unit vectors of ``texts`` from ``encoder`` (a memory's own); cached in-process by encoder and content,
    since evaluation routes the same test texts after every phase."""
    key = hashlib.sha256("\x00".join([encoder.name, *texts]).encode("utf-8")).hexdigest()
    if key not in _vector_cache:
        _vector_cache[key] = encoder.encode(list(texts))
    return _vector_cache[key]
