"""Local adaptation (MbPA, de Masson d'Autume et al., NeurIPS 2019), cheap form: adapt the head per query.

For each query, the ``k`` memory examples nearest to it (by the current encoder's unit features) train a
private copy of the head — restricted to the classes the memory holds — for ``steps`` gradient steps, with
an L2 pull (``pull``) toward the head's own weights, and that copy scores the query. The encoder is not
touched, so the cost per query is a neighbour search plus ``steps`` small (c × d) updates; all queries of a
batch adapt at once. The step size is ``lr`` divided by the neighbours' mean squared feature norm, so one
step moves a logit by about ``lr`` whatever the encoder's feature scale. Defaults are fixed, not tuned.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from rehearsal.errors import ConfigError
from rehearsal.methods.predictors.base import FeaturePredictor, check_fit_input, register_predictor
from rehearsal.methods.predictors.features import unit_rows

__all__ = ["LocalAdaptation"]

_QUERIES_PER_BLOCK = 64  # queries adapted together: (64, c, d) weight copies stay a few MB


@register_predictor
class LocalAdaptation(FeaturePredictor):
    """The head's rows for the memory's classes, and the memory's raw features (n, d) with labels (n,)."""

    name = "local"
    needs_head = True

    def __init__(self, k: int = 32, steps: int = 5, lr: float = 0.5, pull: float = 0.1) -> None:
        super().__init__()
        for key, value in (("k", k), ("steps", steps)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"local {key!r} must be a positive int, got {value!r}")
        for key, number in (("lr", lr), ("pull", pull)):
            if not isinstance(number, (int, float)) or not 0 <= float(number) < float("inf"):
                raise ConfigError(f"local {key!r} must be a non-negative number, got {number!r}")
        self.k, self.steps, self.lr, self.pull = k, steps, float(lr), float(pull)
        self.weight, self.bias = torch.empty(0), torch.empty(0)
        self.features = torch.empty(0)
        self.labels = np.empty(0, dtype=np.int64)
        self._index: Any = None

    def fit(
        self, features: torch.Tensor, labels: Sequence[int], *, head: torch.nn.Linear | None = None
    ) -> None:
        if head is None:
            raise ConfigError("predictor 'local' needs the model's classification head")
        y = check_fit_input(features, labels)
        self.classes = sorted(set(y))
        rows = torch.as_tensor(self.classes)
        bias = head.bias if head.bias is not None else torch.zeros(head.out_features)
        self.restore(
            {
                "weight": head.weight.detach().float().cpu()[rows].numpy(),
                "bias": bias.detach().float().cpu()[rows].numpy(),
                "features": features.float().numpy(),
                "labels": np.asarray(y, dtype=np.int64),
            }
        )

    def scores(self, features: torch.Tensor) -> torch.Tensor:
        blocks = [
            self._adapted_scores(features[start : start + _QUERIES_PER_BLOCK].float())
            for start in range(0, len(features), _QUERIES_PER_BLOCK)
        ]
        return torch.cat(blocks) if blocks else torch.empty(0, len(self.classes))

    def _adapted_scores(self, queries: torch.Tensor) -> torch.Tensor:
        k = min(self.k, len(self.labels))
        _, rows = self._index.search(np.ascontiguousarray(unit_rows(queries).numpy()), k)
        neighbours = self.features[torch.from_numpy(rows)]  # (q, k, d)
        column = {c: i for i, c in enumerate(self.classes)}
        targets = torch.as_tensor(np.vectorize(column.__getitem__, otypes=[np.int64])(self.labels[rows]))
        step = self.lr / float(neighbours.pow(2).sum(dim=2).mean().clamp_min(1e-12))
        w0 = self.weight.expand(len(queries), -1, -1)
        b0 = self.bias.expand(len(queries), -1)
        w, b = w0.clone(), b0.clone()
        with torch.enable_grad():
            for _ in range(self.steps):
                w.requires_grad_(True)
                b.requires_grad_(True)
                logits = torch.einsum("qkd,qcd->qkc", neighbours, w) + b[:, None, :]
                # Summed over queries, averaged over each query's neighbours: every copy sees only its own.
                loss = torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum"
                ) / k + 0.5 * self.pull * (((w - w0) ** 2).sum() + ((b - b0) ** 2).sum())
                grad_w, grad_b = torch.autograd.grad(loss, (w, b))
                w, b = (w - step * grad_w).detach(), (b - step * grad_b).detach()
        return torch.einsum("qd,qcd->qc", queries, w) + b

    def options(self) -> dict[str, Any]:
        return {"k": self.k, "steps": self.steps, "lr": self.lr, "pull": self.pull}

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "weight": self.weight.numpy(),
            "bias": self.bias.numpy(),
            "features": self.features.numpy(),
            "labels": self.labels,
        }

    def restore(self, arrays: Mapping[str, np.ndarray]) -> None:
        import faiss

        self.weight = torch.from_numpy(np.asarray(arrays["weight"], dtype=np.float32))
        self.bias = torch.from_numpy(np.asarray(arrays["bias"], dtype=np.float32))
        self.features = torch.from_numpy(np.ascontiguousarray(arrays["features"], dtype=np.float32))
        self.labels = np.asarray(arrays["labels"], dtype=np.int64)
        self._index = faiss.IndexFlatIP(self.features.shape[1])
        self._index.add(np.ascontiguousarray(unit_rows(self.features).numpy()))
