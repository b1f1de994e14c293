"""Nearest class mean (iCaRL, Rebuffi et al., CVPR 2017): the class whose mean unit feature is nearest.

In class-incremental learning the shared head is what forgets: its newest rows grow large and win the
argmax on old tasks' inputs. The encoder's features forget far less, so the class of the nearest mean
(over the memory's examples, refitted after every phase) sidesteps the head's bias. Features are
L2-normalised so the comparison is a cosine, as iCaRL does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from rehearsal.methods.predictors.base import FeaturePredictor, check_fit_input, register_predictor
from rehearsal.methods.predictors.features import unit_rows

__all__ = ["NearestClassMean"]


@register_predictor
class NearestClassMean(FeaturePredictor):
    """Unit class means ``means`` (c, d) of the classes ``classes``."""

    name = "ncm"

    def __init__(self) -> None:
        super().__init__()
        self.means = torch.empty(0)

    def fit(
        self, features: torch.Tensor, labels: Sequence[int], *, head: torch.nn.Linear | None = None
    ) -> None:
        y = torch.as_tensor(check_fit_input(features, labels))
        unit = unit_rows(features)
        self.classes = sorted({int(v) for v in y.tolist()})
        means = torch.stack([unit[y == c].mean(dim=0) for c in self.classes])
        self.means = unit_rows(means)

    def scores(self, features: torch.Tensor) -> torch.Tensor:
        return unit_rows(features) @ self.means.T

    def options(self) -> dict[str, Any]:
        return {}

    def arrays(self) -> dict[str, np.ndarray]:
        return {"means": self.means.numpy()}

    def restore(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.means = torch.from_numpy(np.asarray(arrays["means"], dtype=np.float32))
