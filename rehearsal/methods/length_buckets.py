"""A sequence classifier's forward pass over a padded batch, run as a few passes over rows of similar length.

A batch is padded to its longest row; WordNet's glosses average 13 tokens under a cap of 32, so most of a
training batch's tokens are padding and the encoder's cost is linear in them. Sorting the rows by length
and running each bucket padded only to its own longest row computes the same logits (a row attends only
to its unmasked tokens; float rounding aside), and autograd carries the loss's gradient back through each
bucket's pass, so the loss, its gradient and the optimiser step are those of the whole batch. Dropout
draws its masks per pass, which changes the random draws but not their distribution.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["length_bucketed_logits"]


def _right_padded(mask: torch.Tensor) -> bool:
    """Whether every row of ``mask`` is ones and then zeros (the layout that trimming columns keeps)."""
    lengths = mask.sum(dim=1, keepdim=True)
    positions = torch.arange(mask.shape[1], device=mask.device)[None, :]
    return bool(torch.equal(mask.bool(), positions < lengths))


def length_bucketed_logits(model: Any, inputs: Mapping[str, Any], buckets: int) -> torch.Tensor | None:
    """``model(**inputs).logits`` computed as ``buckets`` passes over rows sorted by length, each trimmed to
    its longest row, in the rows' own order; None where that does not apply (one bucket, no attention
    mask, left padding, or fewer rows than buckets): the caller then runs the plain pass."""
    mask = inputs.get("attention_mask")
    if buckets <= 1 or not isinstance(mask, torch.Tensor) or mask.dim() != 2 or len(mask) < 2 * buckets:
        return None
    if not _right_padded(mask):
        return None
    lengths = mask.sum(dim=1)
    order = torch.argsort(lengths, stable=True)
    rows, width = mask.shape
    parts = []
    for picked in torch.tensor_split(order, buckets):
        keep = int(lengths[picked].max())
        part = {}
        for name, value in inputs.items():
            if isinstance(value, torch.Tensor) and value.shape[:2] == (rows, width):
                part[name] = value[picked, :keep]  # input_ids, attention_mask, token_type_ids
            elif isinstance(value, torch.Tensor) and value.dim() >= 1 and len(value) == rows:
                part[name] = value[picked]
            else:
                part[name] = value
        parts.append(model(**part).logits)
    # Row i of the concatenation is the row order[i]; gathering by the inverse permutation puts them back.
    return torch.cat(parts)[torch.argsort(order)]
