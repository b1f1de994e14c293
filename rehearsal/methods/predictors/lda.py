"""Linear discriminant analysis with one shared, shrunk covariance: a closed-form head over the features.

Streaming LDA (Hayes & Kanan, CVPRW 2020) showed that class means plus one covariance shared by every
class make a strong, cheap classifier over a frozen or slowly moving encoder. Here it is refitted from the
memory after each phase: unit features, class means, the within-class covariance shrunk toward a scaled
identity by the Ledoit-Wolf intensity (computed from the data, so nothing is tuned on the test sets), and
the linear scores ``x Σ⁻¹ μ_c − ½ μ_c Σ⁻¹ μ_c`` (equal class priors: the memory is class-balanced by design).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from rehearsal.errors import ConfigError
from rehearsal.methods.predictors.base import FeaturePredictor, check_fit_input, register_predictor
from rehearsal.methods.predictors.features import unit_rows

__all__ = ["SharedCovarianceLDA", "ledoit_wolf_shrinkage"]


def ledoit_wolf_shrinkage(centered: np.ndarray) -> float:
    """The Ledoit-Wolf (2004) shrinkage intensity in [0, 1] for rows ``centered`` (n, d) of mean zero."""
    n, d = centered.shape
    cov = centered.T @ centered / n
    mu = float(np.trace(cov)) / d
    distance = float(np.sum((cov - mu * np.eye(d)) ** 2))
    if distance == 0.0:
        return 1.0
    row_norms = np.sum(centered**2, axis=1)
    # sum_i ||x_i x_iᵀ - S||² / n², without forming the n outer products.
    spread = float(np.sum(row_norms**2) - 2 * np.sum((centered @ cov) * centered) + n * np.sum(cov**2))
    return float(min(spread / n**2, distance) / distance)


@register_predictor
class SharedCovarianceLDA(FeaturePredictor):
    """Weights (c, d) and biases (c,) of the discriminant functions (``shrinkage`` None: Ledoit-Wolf's)."""

    name = "lda"

    def __init__(self, shrinkage: float | None = None) -> None:
        super().__init__()
        if shrinkage is not None and (not isinstance(shrinkage, (int, float)) or not 0 <= shrinkage <= 1):
            raise ConfigError(f"lda 'shrinkage' must be None or in [0, 1], got {shrinkage!r}")
        self.shrinkage = shrinkage
        self.weight = torch.empty(0)
        self.bias = torch.empty(0)

    def fit(
        self, features: torch.Tensor, labels: Sequence[int], *, head: torch.nn.Linear | None = None
    ) -> None:
        y = np.asarray(check_fit_input(features, labels))
        x = unit_rows(features).numpy().astype(np.float64)
        classes = sorted({int(v) for v in y})
        means = np.stack([x[y == c].mean(axis=0) for c in classes])
        centered = x - means[np.searchsorted(classes, y)]
        alpha = ledoit_wolf_shrinkage(centered) if self.shrinkage is None else float(self.shrinkage)
        cov = centered.T @ centered / len(x)
        target = float(np.trace(cov)) / cov.shape[0] * np.eye(cov.shape[0])
        shrunk = (1 - alpha) * cov + alpha * target
        # Solving once for every mean is cheaper and steadier than inverting the covariance.
        solved = np.linalg.solve(shrunk, means.T).T  # (c, d): Σ⁻¹ μ_c
        self.weight = torch.from_numpy(solved.astype(np.float32))
        self.bias = torch.from_numpy((-0.5 * np.sum(solved * means, axis=1)).astype(np.float32))
        self.classes = classes

    def scores(self, features: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(unit_rows(features), self.weight, self.bias)

    def options(self) -> dict[str, Any]:
        return {"shrinkage": self.shrinkage}

    def arrays(self) -> dict[str, np.ndarray]:
        return {"weight": self.weight.numpy(), "bias": self.bias.numpy()}

    def restore(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.weight = torch.from_numpy(np.asarray(arrays["weight"], dtype=np.float32))
        self.bias = torch.from_numpy(np.asarray(arrays["bias"], dtype=np.float32))
