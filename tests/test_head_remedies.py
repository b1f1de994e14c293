"""Class-incremental head remedies: the separated softmax loss and nearest-class-mean prediction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import rehearsal as rh
from rehearsal.methods.predictors import make_predictor
from rehearsal.replay.trainer import rehearsal_loss
from rehearsal.runner.config import RunConfig


def _grad_of_logits(loss: str, replay: list[int], labels: list[int]) -> torch.Tensor:
    logits = torch.zeros(len(labels), 6, requires_grad=True)
    value = rehearsal_loss(
        logits,
        torch.as_tensor(labels),
        torch.as_tensor(replay),
        loss=loss,
        current_classes=[3, 4, 5],
        seen_classes=[0, 1, 2, 3, 4, 5],
    )
    value.backward()
    assert logits.grad is not None
    return logits.grad


def test_separated_softmax_keeps_new_and_old_rows_off_each_other_classes() -> None:
    grad = _grad_of_logits("separated", [0, 1], [4, 1])
    # The new row (label 4) pushes only the current task's logits, the replay row (label 1) only old ones.
    assert torch.count_nonzero(grad[0, :3]) == 0
    assert torch.count_nonzero(grad[0, 3:]) == 3
    assert torch.count_nonzero(grad[1, 3:]) == 0
    assert torch.count_nonzero(grad[1, :3]) == 3
    # The asymmetric loss, by contrast, lets the replay row push the new classes down.
    assert torch.count_nonzero(_grad_of_logits("asymmetric", [0, 1], [4, 1])[1, 3:]) == 3


def test_separated_softmax_keeps_a_shared_label_in_its_own_row() -> None:
    """Tasks that share labels: a replay row labelled with a current class still has a finite loss."""
    logits = torch.zeros(1, 6)
    value = rehearsal_loss(
        logits,
        torch.as_tensor([4]),
        torch.as_tensor([1]),
        loss="separated",
        current_classes=[3, 4, 5],
        seen_classes=[0, 1, 2, 3, 4, 5],
    )
    assert torch.isfinite(value)
    assert value.item() == pytest.approx(np.log(4))  # old classes 0-2 plus its own label


def test_separated_loss_needs_the_current_classes() -> None:
    with pytest.raises(rh.ConfigError, match="separated loss needs the current task's classes"):
        rehearsal_loss(torch.zeros(1, 3), torch.as_tensor([0]), None, loss="separated")


def test_nearest_class_mean_predicts_the_nearest_mean() -> None:
    rng = np.random.default_rng(0)
    centres = torch.nn.functional.normalize(
        torch.as_tensor(rng.normal(size=(3, 8)), dtype=torch.float32), dim=1
    )
    labels = [7, 2, 5] * 10
    features = torch.nn.functional.normalize(
        centres.repeat(10, 1) + 0.05 * torch.as_tensor(rng.normal(size=(30, 8)), dtype=torch.float32), dim=1
    )
    ncm = make_predictor("ncm")
    ncm.fit(features, labels)
    assert ncm.classes == [2, 5, 7]
    assert ncm.predict(centres).tolist() == [7, 2, 5]


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"prediction": "prototype"}, "'prediction' must be one of"),
        ({"prediction": "ncm", "method": "naive"}, "prediction 'ncm' is fitted on a replay memory"),
        ({"prediction": "lda", "method": "ewc"}, "method 'ewc' keeps none"),
        ({"prediction_per_class": 0}, "'prediction_per_class' must be a positive int or None"),
        ({"prediction": "ncm", "method": "lora-routed"}, "method 'lora-routed' keeps none"),
        ({"loss": "separate"}, "'loss' must be one of"),
    ],
)
def test_invalid_head_remedy_settings_are_rejected(changes: dict[str, Any], match: str) -> None:
    with pytest.raises(rh.ConfigError, match=match):
        RunConfig(**changes)


def test_head_remedy_settings_are_accepted_and_round_trip(tmp_path: Path) -> None:
    config = RunConfig(method="coverage", prediction="ncm", loss="separated")
    config.save(tmp_path / "run.json")
    assert RunConfig.load(tmp_path / "run.json") == config
