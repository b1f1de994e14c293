"""What every feature predictor reads: the features a sequence classifier's head receives, one forward pass.

``encoder_features`` returns them raw (the head applied to them gives the model's logits exactly, in eval
mode), so the head, the class means, the neighbours and the closed-form heads are all read out of one pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from rehearsal.errors import ConfigError
from rehearsal.methods.calibration import classification_head
from rehearsal.methods.inference import batch_logits

__all__ = ["encoder_features", "unit_rows"]


def encoder_features(
    model: torch.nn.Module, tokenizer: Any, texts: Sequence[str], *, batch_size: int, max_length: int
) -> torch.Tensor:
    """(n, d) float32 on CPU: the input of ``model``'s classification head for each text (not normalised)."""
    if not len(texts):
        head = classification_head(model)
        return torch.empty(0, head.in_features)
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
    return features.reshape(len(features), -1)


def unit_rows(features: torch.Tensor) -> torch.Tensor:
    """``features`` with every row scaled to unit length (cosine geometry)."""
    return torch.nn.functional.normalize(features.float(), dim=1)
