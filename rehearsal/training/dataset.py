"""The training set a pass takes, as a run's phase and a deployment's update both build it: the texts
tokenized (truncated, unpadded: the collator pads), their label ids, and any columns the replay collator
and the admission callback read (the texts, their memory vectors, their tasks)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rehearsal.replay.trainer import LABELS

__all__ = ["training_set", "vector_rows"]


def vector_rows(vectors: np.ndarray) -> list[list[float]]:
    """``vectors`` (n, dim) as the list-of-rows column a ``datasets.Dataset`` holds."""
    return [row.tolist() for row in vectors]


def training_set(
    tokenizer: Any,
    texts: Sequence[str],
    label_ids: Sequence[int],
    *,
    max_length: int,
    columns: Mapping[str, Sequence[Any]] | None = None,
) -> Any:
    """A ``datasets.Dataset`` of ``texts`` tokenized to at most ``max_length`` tokens with their
    ``label_ids``, plus ``columns`` (each one value per text)."""
    from datasets import Dataset

    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)
    data: dict[str, list[Any]] = {k: list(v) for k, v in encoded.items()}
    data[LABELS] = list(label_ids)
    for name, values in (columns or {}).items():
        data[name] = list(values)
    return Dataset.from_dict(data)
