"""Post-hoc correction of the shared head's bias towards the newest classes (class-incremental learning).

After a phase trained with more new examples than old ones, the new classes' rows of the classification
head grow larger norms than the old classes' rows, so new classes win the argmax on old tasks' inputs.
*Weight aligning* (Zhao et al., "Maintaining Discrimination and Fairness in Class Incremental Learning",
CVPR 2020) rescales the new rows (weights and bias) by ``gamma = mean ||w_old|| / mean ||w_new||``, which
multiplies the new classes' logits by ``gamma`` and leaves every old logit unchanged. It needs no data.

``calibrate(model, method, old_classes=..., new_classes=...)`` is what the run loop calls after a phase.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rehearsal.errors import ConfigError

__all__ = ["CALIBRATIONS", "align_weights", "calibrate", "classification_head"]

CALIBRATIONS = ("none", "weight_aligning")


def classification_head(model: torch.nn.Module) -> torch.nn.Linear:
    """The output layer: the last ``nn.Linear`` with one output per label (``model.config.num_labels``)."""
    n_labels = getattr(getattr(model, "config", None), "num_labels", None)
    heads = [m for m in model.modules() if isinstance(m, torch.nn.Linear)
             and (n_labels is None or m.out_features == n_labels)]
    if not heads:
        name = type(model).__name__
        raise ConfigError(f"no classification head (nn.Linear with {n_labels} outputs) in {name}")
    return heads[-1]


def align_weights(head: torch.nn.Linear, *, old_classes: Sequence[int], new_classes: Sequence[int]) -> float:
    """Scale the rows of ``new_classes`` so their mean weight norm equals that of ``old_classes``.

    The bias of the new rows is scaled by the same factor, so each new logit is multiplied by it.
    Returns the factor (1.0, nothing changed, when either group is empty).
    """
    old, new = sorted(set(old_classes)), sorted(set(new_classes))
    if set(old) & set(new):
        raise ConfigError(f"old and new classes overlap: {sorted(set(old) & set(new))}")
    if not old or not new:
        return 1.0
    with torch.no_grad():
        norms = head.weight.norm(dim=1)
        new_mean = float(norms[new].mean())
        if new_mean == 0.0:
            return 1.0
        gamma = float(norms[old].mean()) / new_mean
        head.weight[new] *= gamma
        if head.bias is not None:
            head.bias[new] *= gamma
    return gamma


def calibrate(model: torch.nn.Module, method: str, *, old_classes: Sequence[int],
              new_classes: Sequence[int]) -> float:
    """Apply the calibration ``method`` (one of ``CALIBRATIONS``) to ``model``'s head; returns the scale."""
    if method not in CALIBRATIONS:
        raise ConfigError(f"'calibration' must be one of {list(CALIBRATIONS)}, got {method!r}")
    if method == "none":
        return 1.0
    return align_weights(classification_head(model), old_classes=old_classes, new_classes=new_classes)
