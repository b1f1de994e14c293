"""Post-hoc correction of the shared head's bias towards the newest classes (class-incremental learning).

After a phase trained with more new examples than old ones, the new classes' rows of the classification
head grow larger norms than the old classes' rows, so new classes win the argmax on old tasks' inputs.
*Weight aligning* (Zhao et al., "Maintaining Discrimination and Fairness in Class Incremental Learning",
CVPR 2020) rescales the new rows (weights and bias) by ``gamma = mean ||w_old|| / mean ||w_new||``, which
multiplies the new classes' logits by ``gamma`` and leaves every old logit unchanged. It needs no data.

*Bias correction* (BiC, Wu et al., "Large Scale Incremental Learning", CVPR 2019) instead fits a scale
``alpha`` and offset ``beta`` for the new classes' logits on a small class-balanced set (here drawn from the
replay memory, which by then holds the new task too) and folds them into the head's new rows, so the
corrected model is an ordinary classifier again.

``calibrate(model, method, old_classes=..., new_classes=...)`` is what the run loop calls after a phase.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from rehearsal.config import CALIBRATIONS
from rehearsal.errors import ConfigError
from rehearsal.methods.inference import batch_logits

__all__ = [
    "CALIBRATIONS",
    "align_weights",
    "apply_bias_correction",
    "calibrate",
    "classification_head",
    "fit_bias_correction",
]

# Each of these needs a class-balanced calibration set (texts, labels) passed to calibrate().
NEEDS_DATA = ("bias_correction",)


def classification_head(model: torch.nn.Module) -> torch.nn.Linear:
    """The output layer: the last ``nn.Linear`` with one output per label (``model.config.num_labels``)."""
    n_labels = getattr(getattr(model, "config", None), "num_labels", None)
    heads = [
        m
        for m in model.modules()
        if isinstance(m, torch.nn.Linear) and (n_labels is None or m.out_features == n_labels)
    ]
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


def fit_bias_correction(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    new_classes: Sequence[int],
    seen_classes: Sequence[int],
    steps: int = 100,
) -> tuple[float, float]:
    """``(alpha, beta)`` minimising the cross-entropy over ``seen_classes`` of ``logits`` (n, C) against
    ``labels`` (n,) once the columns of ``new_classes`` become ``alpha * z + beta``."""
    columns = sorted(set(seen_classes))
    position = {c: i for i, c in enumerate(columns)}
    # Only the seen classes' columns take part (no -inf masking: its gradient through alpha would be NaN).
    z = logits.detach().float()[:, columns]
    targets = torch.as_tensor([position[int(y)] for y in labels])
    new = torch.as_tensor([c in set(new_classes) for c in columns])
    params = torch.tensor([1.0, 0.0], requires_grad=True)
    optimizer = torch.optim.LBFGS([params], lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        corrected = torch.where(new, params[0] * z + params[1], z)
        loss = torch.nn.functional.cross_entropy(corrected, targets)
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    optimizer.step(closure)  # type: ignore[no-untyped-call]
    alpha, beta = (float(v) for v in params.detach())
    return alpha, beta


def apply_bias_correction(
    head: torch.nn.Linear, *, new_classes: Sequence[int], alpha: float, beta: float
) -> None:
    """Fold ``alpha * z + beta`` for the logits of ``new_classes`` into ``head``'s rows."""
    if head.bias is None:
        raise ConfigError("bias correction needs a head with a bias term")
    rows = sorted(set(new_classes))
    with torch.no_grad():
        head.weight[rows] *= alpha
        head.bias[rows] = head.bias[rows] * alpha + beta


def calibrate(
    model: torch.nn.Module,
    method: str,
    *,
    old_classes: Sequence[int],
    new_classes: Sequence[int],
    data: tuple[Sequence[str], Sequence[int]] | None = None,
    tokenizer: Any = None,
    max_length: int = 128,
) -> dict[str, float]:
    """Apply the calibration ``method`` (one of ``CALIBRATIONS``) to ``model``'s head; returns what it did.

    ``bias_correction`` needs ``data`` (texts, labels), a class-balanced set over old and new classes, and
    the ``tokenizer``; the others need no data.
    """
    if method not in CALIBRATIONS:
        raise ConfigError(f"'calibration' must be one of {list(CALIBRATIONS)}, got {method!r}")
    if method == "none":
        return {}
    head = classification_head(model)
    if method == "weight_aligning":
        return {"calibration_scale": align_weights(head, old_classes=old_classes, new_classes=new_classes)}
    if not old_classes or not new_classes:
        return {"calibration_scale": 1.0, "calibration_offset": 0.0}
    if data is None or tokenizer is None:
        raise ConfigError(f"calibration {method!r} needs a calibration set (texts, labels) and a tokenizer")
    texts, labels = data
    logits = batch_logits(model, tokenizer, texts, batch_size=64, max_length=max_length)
    alpha, beta = fit_bias_correction(
        logits,
        torch.as_tensor(list(labels)),
        new_classes=new_classes,
        seen_classes=[*old_classes, *new_classes],
    )
    apply_bias_correction(head, new_classes=new_classes, alpha=alpha, beta=beta)
    return {"calibration_scale": alpha, "calibration_offset": beta}
