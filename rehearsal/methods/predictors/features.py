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
from rehearsal.methods.inference import batch_logits, length_order, restore_order

__all__ = ["encoder_features", "unit_rows"]


def encoder_features(
    model: torch.nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    batch_size: int,
    max_length: int,
    by_length: bool = True,
) -> torch.Tensor:
    """(n, d) float32 on CPU: the input of ``model``'s classification head for each text (not normalised),
    in the order of ``texts``; ``by_length`` as in ``batch_logits``."""
    if not len(texts):
        head = classification_head(model)
        return torch.empty(0, head.in_features)
    head = classification_head(model)
    captured: list[torch.Tensor] = []

    def keep_input(module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
        captured.append(args[0].detach().float().cpu())

    # The hook sees the batches in the order they run; sorted by length, they are put back afterwards.
    order = length_order(tokenizer, texts, max_length=max_length) if by_length else None
    ordered = list(texts) if order is None else [texts[i] for i in order]
    handle = head.register_forward_hook(keep_input)
    try:
        batch_logits(model, tokenizer, ordered, batch_size=batch_size, max_length=max_length, by_length=False)
    finally:
        handle.remove()
    if not captured:
        raise ConfigError(f"the classification head of {type(model).__name__} was not called; no features")
    features = torch.cat(captured)
    restored: torch.Tensor = restore_order(features.reshape(len(features), -1), order)
    return restored


def unit_rows(features: torch.Tensor) -> torch.Tensor:
    """``features`` with every row scaled to unit length (cosine geometry)."""
    return torch.nn.functional.normalize(features.float(), dim=1)
