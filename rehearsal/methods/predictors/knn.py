"""Distance-weighted k nearest neighbours over the memory's features from the *current* encoder.

The memory's examples are embedded by the fine-tuned model (not the frozen sentence encoder the memory
searches with), kept in a FAISS inner-product index over unit features (so it scales to the memory's
size), and each query's ``k`` nearest vote with weight ``exp(cosine / temperature)``: close neighbours
dominate, far ones still break ties. Defaults (k=20, temperature 0.07) are the weighted k-NN of the
self-supervised literature (Wu et al. 2018, DINO), fixed before any of our measurements.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from rehearsal.errors import ConfigError
from rehearsal.methods.predictors.base import FeaturePredictor, check_fit_input, register_predictor
from rehearsal.methods.predictors.features import unit_rows

__all__ = ["KNearest"]


@register_predictor
class KNearest(FeaturePredictor):
    """The unit features (n, d) and labels (n,) of the memory's examples, searched with FAISS."""

    name = "knn"

    def __init__(self, k: int = 20, temperature: float = 0.07) -> None:
        super().__init__()
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"knn 'k' must be a positive int, got {k!r}")
        if not isinstance(temperature, (int, float)) or not 0 < float(temperature) < float("inf"):
            raise ConfigError(f"knn 'temperature' must be a positive number, got {temperature!r}")
        self.k, self.temperature = k, float(temperature)
        self.vectors = np.empty((0, 0), dtype=np.float32)
        self.labels = np.empty(0, dtype=np.int64)
        self._index: Any = None

    def fit(
        self, features: torch.Tensor, labels: Sequence[int], *, head: torch.nn.Linear | None = None
    ) -> None:
        y = check_fit_input(features, labels)
        self.restore({"vectors": unit_rows(features).numpy(), "labels": np.asarray(y, dtype=np.int64)})
        self.classes = sorted(set(y))

    def scores(self, features: torch.Tensor) -> torch.Tensor:
        queries = np.ascontiguousarray(unit_rows(features).numpy(), dtype=np.float32)
        k = min(self.k, len(self.labels))
        similarity, rows = self._index.search(queries, k)
        column = {c: i for i, c in enumerate(self.classes)}
        votes = np.zeros((len(queries), len(self.classes)), dtype=np.float64)
        weights = np.exp((similarity.astype(np.float64) - 1.0) / self.temperature)  # shifted: no overflow
        neighbour_cols = np.vectorize(column.__getitem__, otypes=[np.int64])(self.labels[rows])
        np.add.at(votes, (np.arange(len(queries))[:, None], neighbour_cols), weights)
        votes /= votes.sum(axis=1, keepdims=True)  # each class's share of the vote
        return torch.from_numpy(votes.astype(np.float32))

    def options(self) -> dict[str, Any]:
        return {"k": self.k, "temperature": self.temperature}

    def arrays(self) -> dict[str, np.ndarray]:
        return {"vectors": self.vectors, "labels": self.labels}

    def restore(self, arrays: Mapping[str, np.ndarray]) -> None:
        import faiss

        self.vectors = np.ascontiguousarray(arrays["vectors"], dtype=np.float32)
        self.labels = np.asarray(arrays["labels"], dtype=np.int64)
        self._index = faiss.IndexFlatIP(self.vectors.shape[1])
        self._index.add(self.vectors)
