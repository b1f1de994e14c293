"""A linear router over embeddings: which expert (or task) an input belongs to, learnt from the memory.

The k-NN vote of :class:`rehearsal.methods.adapters.AdapterRouter` counts neighbours, so an expert with
few entries is outvoted near a larger one: on the WordNet stream 48 adjective glosses among 180 verb and
144 noun glosses are routed home 15% of the time. A probe is a multinomial logistic regression on the
same MiniLM vectors, fitted with class weights that give every expert the same total weight, so it
learns the direction that separates the groups instead of their head count (the same glosses: 50%, and
physical-object nouns 0.86 -> 0.91). It is small (a weight matrix of experts x dim) and stored as plain
numbers in the version's state::

    probe = TaskProbe.fit(vectors, ["expert_0", "expert_1", ...], seed=0)
    probe.predict(query_vectors)            # ["expert_1", ...]
    TaskProbe.from_dict(probe.to_dict())    # the same probe
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rehearsal.errors import StoreFormatError, ValidationError

__all__ = ["TaskProbe"]

_L2 = 1e-3  # keeps the weights finite when the groups are separable, as they often are at a few rows


class TaskProbe:
    """``weights`` (groups, dim) and ``bias`` (groups,) of a linear classifier over ``names``."""

    def __init__(self, names: Sequence[str], weights: np.ndarray, bias: np.ndarray) -> None:
        w = np.asarray(weights, dtype=np.float32)
        b = np.asarray(bias, dtype=np.float32)
        if w.ndim != 2 or b.shape != (w.shape[0],) or len(names) != w.shape[0] or len(names) < 2:
            raise ValidationError(
                f"a probe needs one weight row and bias per name (>= 2), got {len(names)} names, "
                f"weights {w.shape}, bias {b.shape}"
            )
        self.names = [str(n) for n in names]
        self.weights, self.bias = w, b

    def __repr__(self) -> str:
        return f"TaskProbe(names={self.names}, dim={self.weights.shape[1]})"

    @classmethod
    def fit(cls, vectors: np.ndarray, labels: Sequence[str], *, seed: int = 0) -> TaskProbe:
        """Fit on ``vectors`` (n, dim) labelled with group names; each group weighs the same in the loss."""
        import torch

        x = np.asarray(vectors, dtype=np.float32)
        if x.ndim != 2 or len(x) != len(labels):
            raise ValidationError(f"need one label per vector row, got {x.shape} and {len(labels)} labels")
        names = sorted({str(label) for label in labels})
        if len(names) < 2:
            raise ValidationError(f"a probe separates at least 2 groups, got {names}")
        y = np.asarray([names.index(str(label)) for label in labels], dtype=np.int64)
        counts = np.bincount(y, minlength=len(names)).astype(np.float32)
        torch.manual_seed(seed)
        features, targets = torch.from_numpy(x), torch.from_numpy(y)
        balance = torch.from_numpy(len(y) / (len(names) * counts))
        layer = torch.nn.Linear(x.shape[1], len(names))
        optimizer = torch.optim.LBFGS(layer.parameters(), max_iter=200, line_search_fn="strong_wolfe")

        def loss() -> torch.Tensor:
            optimizer.zero_grad()
            value = torch.nn.functional.cross_entropy(layer(features), targets, weight=balance)
            value = value + _L2 * (layer.weight**2).sum()
            value.backward()  # type: ignore[no-untyped-call]
            return value

        optimizer.step(loss)  # type: ignore[no-untyped-call]
        with torch.no_grad():
            return cls(names, layer.weight.numpy().copy(), layer.bias.numpy().copy())

    def predict(self, vectors: np.ndarray) -> list[str]:
        """The group of each row of ``vectors`` (n, dim)."""
        x = np.asarray(vectors, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.weights.shape[1]:
            raise ValidationError(f"vectors must be (n, {self.weights.shape[1]}), got {x.shape}")
        scores = x @ self.weights.T + self.bias
        return [self.names[int(i)] for i in scores.argmax(axis=1)]

    def to_dict(self) -> dict[str, Any]:
        return {"names": self.names, "weights": self.weights.tolist(), "bias": self.bias.tolist()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskProbe:
        try:
            return cls(list(data["names"]), np.asarray(data["weights"]), np.asarray(data["bias"]))
        except (KeyError, TypeError, ValueError, ValidationError) as exc:
            raise StoreFormatError(f"not a stored task probe: {exc}") from None
