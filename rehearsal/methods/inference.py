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

__all__ = [
    "batch_logits",
    "embed_texts",
    "evaluate_accuracy",
    "length_order",
    "predict_labels",
    "restore_order",
]


def length_order(tokenizer: Any, texts: Sequence[str], *, max_length: int) -> np.ndarray:
    """Indices of ``texts`` from the fewest tokens to the most (stable): batches taken in this order carry
    little padding. WordNet's glosses average 13 tokens under a cap of 32, so a batch padded to its longest
    text is mostly padding; sorted, a pass over them costs about half."""
    if not len(texts):
        return np.empty(0, dtype=np.int64)
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    lengths = [len(ids) for ids in encoded]
    return np.argsort(np.asarray(lengths, dtype=np.int64), kind="stable")


def batch_logits(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    batch_size: int,
    max_length: int,
    by_length: bool = True,
) -> Any:
    """(n, outputs) float32 tensor on CPU: ``model``'s logits for ``texts``, in eval mode, batch by batch
    on the model's device, in the order of ``texts``. The one inference loop of evaluation, calibration
    and the task gate. ``by_length`` batches the texts sorted by length (the padding masked either way, so
    only float rounding differs); False batches them in the order given (the reference path)."""
    import torch

    order = length_order(tokenizer, texts, max_length=max_length) if by_length else None
    ordered = list(texts) if order is None else [texts[i] for i in order]
    device = next(model.parameters()).device
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(ordered), batch_size):
            batch = tokenizer(
                ordered[start : start + batch_size],
                truncation=True,
                max_length=max_length,
                padding=True,
                return_tensors="pt",
            ).to(device)
            out.append(model(**batch).logits.float().cpu())
    return restore_order(torch.cat(out) if out else torch.empty(0), order)


def restore_order(rows: Any, order: np.ndarray | None) -> Any:
    """``rows`` computed for ``texts[order]``, put back in the order of ``texts`` (None: as they are)."""
    import torch

    if order is None:
        return rows
    restored = torch.empty_like(rows)
    restored[torch.from_numpy(order)] = rows
    return restored


def predict_labels(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    batch_size: int,
    max_length: int,
    allowed: Sequence[int] | None = None,
    by_length: bool = True,
) -> np.ndarray:
    """(n,) int64: the argmax of ``model``'s logits for each text, over ``allowed`` classes (all if None)."""
    if not len(texts):
        return np.empty(0, dtype=np.int64)
    logits: np.ndarray = batch_logits(
        model, tokenizer, texts, batch_size=batch_size, max_length=max_length, by_length=by_length
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
