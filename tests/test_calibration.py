"""Weight aligning of the classification head against hand-computed norms."""

from __future__ import annotations

import pytest
import torch

from rehearsal.calibration import align_weights, calibrate, classification_head
from rehearsal.errors import ConfigError


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
    assert calibrate(model, "none", old_classes=[0, 1], new_classes=[2, 3]) == 1.0
    assert torch.equal(model.head.weight, _head().weight)


def test_calibrate_weight_aligning_rescales_the_head() -> None:
    model = _Model()
    assert calibrate(model, "weight_aligning", old_classes=[0, 1], new_classes=[2, 3]) == pytest.approx(1 / 3)


def test_unknown_calibration_is_rejected() -> None:
    with pytest.raises(ConfigError, match="'calibration' must be one of"):
        calibrate(_Model(), "temperature", old_classes=[0], new_classes=[1])
