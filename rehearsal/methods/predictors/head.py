"""The model's own head as a predictor: the argmax of its logits over every class it has outputs for.

It reads the same features as the memory's predictors (the head applied to them is the model's logits),
so one forward pass scores both and a run's results keep the head's matrix beside the chosen predictor's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from rehearsal.errors import ConfigError
from rehearsal.methods.predictors.base import FeaturePredictor, register_predictor

__all__ = ["HeadPredictor"]


@register_predictor
class HeadPredictor(FeaturePredictor):
    """A copy of a linear head's ``weight`` (c, d) and ``bias`` (c,); classes are its output rows."""

    name = "head"
    needs_head = True

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.empty(0)
        self.bias = torch.empty(0)

    def fit(
        self, features: torch.Tensor, labels: Sequence[int], *, head: torch.nn.Linear | None = None
    ) -> None:
        if head is None:
            raise ConfigError("predictor 'head' needs the model's classification head")
        self.weight = head.weight.detach().float().cpu().clone()
        bias = head.bias
        self.bias = torch.zeros(len(self.weight)) if bias is None else bias.detach().float().cpu().clone()
        self.classes = list(range(len(self.weight)))

    def scores(self, features: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(features.float(), self.weight, self.bias)

    def options(self) -> dict[str, Any]:
        return {}

    def arrays(self) -> dict[str, np.ndarray]:
        return {"weight": self.weight.numpy(), "bias": self.bias.numpy()}

    def restore(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.weight = torch.from_numpy(np.asarray(arrays["weight"], dtype=np.float32))
        self.bias = torch.from_numpy(np.asarray(arrays["bias"], dtype=np.float32))
