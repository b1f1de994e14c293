"""Prediction for embedding-only memories: a weighted vote of the memory's own nearest stored vectors.

An embedding-only memory keeps no text, so its examples cannot be re-embedded by the fine-tuned encoder
(what ``ncm``/``knn``/``lda`` need). What it does keep is each example's vector from the frozen sentence
encoder, searchable through the public memory API; a query embedded by that same encoder takes the labels
of its ``k`` nearest entries, weighted by ``exp(cosine / temperature)`` like ``knn``. It ignores the
fine-tuned model entirely, so it cannot forget — and cannot learn beyond what the frozen vectors separate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from rehearsal.errors import ConfigError, ValidationError

if TYPE_CHECKING:
    from rehearsal.memory.facade import RehearsalMemory

__all__ = ["memory_vote"]


def memory_vote(
    memory: RehearsalMemory,
    texts: Sequence[str] | None = None,
    *,
    vectors: np.ndarray | None = None,
    k: int = 20,
    temperature: float = 0.07,
    where: Mapping[str, Any] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(labels (n,), shares (n,)): the winning integer label of each query and its share of the vote.

    Queries are ``texts`` (embedded by the memory's encoder) or precomputed ``vectors`` (n, dim); only
    entries matching ``where`` vote. A query with no labelled neighbour gets label -1 and share 0.
    """
    if (texts is None) == (vectors is None):
        raise ValidationError("memory_vote needs exactly one of 'texts' or 'vectors'")
    if not isinstance(temperature, (int, float)) or not 0 < float(temperature) < float("inf"):
        raise ConfigError(f"'temperature' must be a positive number, got {temperature!r}")
    queries = (
        memory.encoder.encode(list(texts)) if texts is not None else np.asarray(vectors, dtype=np.float32)
    )
    labels = np.full(len(queries), -1, dtype=np.int64)
    shares = np.zeros(len(queries), dtype=np.float32)
    if not len(queries):
        return labels, shares
    for row, hits in enumerate(memory.search_vectors(queries, k, where=where)):
        votes: dict[int, float] = {}
        for hit in hits:
            label = hit.metadata.get("label")
            if isinstance(label, int) and not isinstance(label, bool):
                votes[label] = votes.get(label, 0.0) + float(np.exp((hit.score - 1.0) / temperature))
        if votes:
            best = max(votes, key=lambda c: votes[c])
            labels[row], shares[row] = best, votes[best] / sum(votes.values())
    return labels, shares
