"""Weight aligning of the classification head against hand-computed norms."""

from __future__ import annotations

import pytest
import torch

from rehearsal.errors import ConfigError
from rehearsal.methods.calibration import (
    align_weights,
    apply_bias_correction,
    calibrate,
    classification_head,
    fit_bias_correction,
)


def _head() -> torch.nn.Linear:
    # Rows 0-1 are old classes (norms 1 and 3, mean 2); rows 2-3 are new (norms 4 and 8, mean 6).
    head = torch.nn.Linear(2, 4)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 3.0], [4.0, 0.0], [0.0, 8.0]]))
        head.bias.copy_(torch.tensor([0.5, 0.5, 3.0, -3.0]))
    return head


class _Config:
    num_labels = 4


class _Model(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.config = _Config()
        self.body = torch.nn.Linear(3, 2)  # 2 outputs: not the head
        self.head = _head()


def test_weight_aligning_scales_new_rows_to_the_old_mean_norm() -> None:
    head = _head()
    gamma = align_weights(head, old_classes=[0, 1], new_classes=[2, 3])
    assert gamma == pytest.approx(2.0 / 6.0)
    norms = head.weight.norm(dim=1)
    assert norms[2:].mean().item() == pytest.approx(2.0)
    assert head.bias[2:].tolist() == pytest.approx([1.0, -1.0])


def test_weight_aligning_leaves_old_logits_unchanged_and_scales_new_logits() -> None:
    head, x = _head(), torch.tensor([[0.3, -0.7]])
    before = head(x).detach()
    align_weights(head, old_classes=[0, 1], new_classes=[2, 3])
    after = head(x).detach()
    assert torch.allclose(after[:, :2], before[:, :2])
    assert torch.allclose(after[:, 2:], before[:, 2:] / 3.0)


def test_weight_aligning_without_old_classes_changes_nothing() -> None:
    head = _head()
    assert align_weights(head, old_classes=[], new_classes=[2, 3]) == 1.0
    assert torch.equal(head.weight, _head().weight)


def test_overlapping_class_groups_are_rejected() -> None:
    with pytest.raises(ConfigError, match="overlap"):
        align_weights(_head(), old_classes=[0, 1], new_classes=[1, 2])


def test_classification_head_is_the_linear_layer_with_one_output_per_label() -> None:
    model = _Model()
    assert classification_head(model) is model.head


def test_model_without_a_head_is_rejected() -> None:
    model = _Model()
    model.head = torch.nn.Linear(2, 3)
    with pytest.raises(ConfigError, match="no classification head"):
        classification_head(model)


def test_calibrate_none_leaves_the_model_alone() -> None:
    model = _Model()
    assert calibrate(model, "none", old_classes=[0, 1], new_classes=[2, 3]) == {}
    assert torch.equal(model.head.weight, _head().weight)


def test_calibrate_weight_aligning_rescales_the_head() -> None:
    model = _Model()
    logs = calibrate(model, "weight_aligning", old_classes=[0, 1], new_classes=[2, 3])
    assert logs == {"calibration_scale": pytest.approx(1 / 3)}


def test_unknown_calibration_is_rejected() -> None:
    with pytest.raises(ConfigError, match="'calibration' must be one of"):
        calibrate(_Model(), "temperature", old_classes=[0], new_classes=[1])


def _biased_logits(n: int = 400) -> tuple[torch.Tensor, torch.Tensor]:
    """Four seen classes (2 old, 2 new) of a 5-way head; the new columns sit 3 below where they belong."""
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 4
    logits = torch.randn(n, 5, generator=gen)
    logits[torch.arange(n), labels] += 3.0
    logits[:, 2:4] -= 3.0
    return logits, labels


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits[:, :4].argmax(dim=1) == labels).float().mean())


def test_bias_correction_lifts_new_classes_pushed_down_by_a_constant() -> None:
    logits, labels = _biased_logits()
    alpha, beta = fit_bias_correction(logits, labels, new_classes=[2, 3], seen_classes=[0, 1, 2, 3])
    assert beta > 2.0
    corrected = logits.clone()
    corrected[:, 2:4] = alpha * corrected[:, 2:4] + beta
    assert _accuracy(corrected, labels) >= _accuracy(logits, labels) + 0.2
    assert _accuracy(corrected, labels) >= 0.8


def test_apply_bias_correction_folds_scale_and_offset_into_the_new_rows() -> None:
    head, x = _head(), torch.tensor([[0.3, -0.7]])
    before = head(x).detach()
    apply_bias_correction(head, new_classes=[2, 3], alpha=2.0, beta=-1.0)
    after = head(x).detach()
    assert torch.allclose(after[:, :2], before[:, :2])
    assert torch.allclose(after[:, 2:], 2.0 * before[:, 2:] - 1.0)


def test_bias_correction_without_a_calibration_set_is_rejected() -> None:
    with pytest.raises(ConfigError, match="needs a calibration set"):
        calibrate(_Model(), "bias_correction", old_classes=[0, 1], new_classes=[2, 3])


def test_bias_correction_of_a_head_without_bias_is_rejected() -> None:
    head = torch.nn.Linear(2, 4, bias=False)
    with pytest.raises(ConfigError, match="bias term"):
        apply_bias_correction(head, new_classes=[2], alpha=1.0, beta=0.0)
