"""Nearest-class-mean prediction (iCaRL, Rebuffi et al., CVPR 2017) from a classifier's own encoder.

In class-incremental learning the shared head is what forgets: its newest rows grow large and win the
argmax on old tasks' inputs (benchmarks/RESULTS.md, issue 6). The encoder's features forget far less, so
predicting the class whose mean feature is nearest sidesteps the head's bias. The means are taken over
the replay memory's examples of every class seen so far, recomputed after each phase (the encoder moved);
features are the head's input (for BERT-like classifiers, the pooled output), L2-normalised so the
comparison is a cosine, as iCaRL does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rehearsal.errors import ConfigError
from rehearsal.methods.calibration import classification_head
from rehearsal.methods.inference import batch_logits

__all__ = ["NearestClassMean", "head_features"]


def head_features(
    model: torch.nn.Module, tokenizer: Any, texts: Sequence[str], *, batch_size: int, max_length: int
) -> torch.Tensor:
    """(n, d) float32 on CPU: what ``model``'s classification head receives for each text, L2-normalised."""
    head = classification_head(model)
    captured: list[torch.Tensor] = []

    def keep_input(module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
        captured.append(args[0].detach().float().cpu())

    handle = head.register_forward_hook(keep_input)
    try:
        batch_logits(model, tokenizer, texts, batch_size=batch_size, max_length=max_length)
    finally:
        handle.remove()
    if not captured:
        raise ConfigError(f"the classification head of {type(model).__name__} was not called; no features")
    features = torch.cat(captured)
    return torch.nn.functional.normalize(features.reshape(len(features), -1), dim=1)


@dataclass
class NearestClassMean:
    """Class means ``means`` (c, d), unit length, of the classes ``classes`` (c,)."""

    classes: list[int]
    means: torch.Tensor

    @classmethod
    def fit(cls, features: torch.Tensor, labels: Sequence[int]) -> NearestClassMean:
        """Means of ``features`` (n, d) per label in ``labels`` (n,)."""
        if len(features) != len(labels) or not len(labels):
            raise ConfigError(
                f"class means need one label per feature row, got {len(labels)} for {len(features)}"
            )
        y = torch.as_tensor(list(labels))
        classes = sorted({int(v) for v in y.tolist()})
        means = torch.stack([features[y == c].mean(dim=0) for c in classes])
        return cls(classes, torch.nn.functional.normalize(means, dim=1))

    def predict(self, features: torch.Tensor) -> np.ndarray:
        """(n,) int64: the class of the nearest mean (by cosine) to each row of ``features`` (n, d)."""
        nearest = (features @ self.means.T).argmax(dim=1)
        predicted: np.ndarray = np.asarray(self.classes, dtype=np.int64)[nearest.numpy()]
        return predicted
