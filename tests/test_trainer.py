"""RehearsalTrainer's loss: plain, masked-unseen and asymmetric cross-entropy against hand-computed cases."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from rehearsal.errors import ConfigError
from rehearsal.replay.trainer import rehearsal_loss

# Two rows, four classes. Row 0 is new (label 1, current task = classes {0, 1}); row 1 is replay
# (label 2, seen classes = {0, 1, 2}; class 3 has not been seen yet).
LOGITS = torch.tensor([[1.0, 2.0, 3.0, 0.0], [0.5, 0.0, 1.5, 2.0]])
LABELS = torch.tensor([1, 2])
REPLAY = torch.tensor([0, 1])


def _ce(logits: list[float], label: int) -> float:
    return -logits[label] + math.log(sum(math.exp(v) for v in logits))


def test_plain_cross_entropy_uses_every_class() -> None:
    expected = (_ce([1.0, 2.0, 3.0, 0.0], 1) + _ce([0.5, 0.0, 1.5, 2.0], 2)) / 2
    loss = rehearsal_loss(LOGITS, LABELS, REPLAY, loss="ce")
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_asymmetric_loss_masks_new_rows_to_current_task_and_replay_rows_to_seen_classes() -> None:
    # New row: softmax over {0, 1} only. Replay row: softmax over {0, 1, 2}; unseen class 3 is left out.
    expected = (_ce([1.0, 2.0], 1) + _ce([0.5, 0.0, 1.5], 2)) / 2
    loss = rehearsal_loss(
        LOGITS, LABELS, REPLAY, loss="asymmetric", current_classes=[0, 1], seen_classes=[0, 1, 2]
    )
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx((0.31326169 + 0.46436870) / 2, rel=1e-6)


def test_mask_unseen_leaves_classes_not_yet_seen_out_of_every_row() -> None:
    expected = (_ce([1.0, 2.0, 3.0], 1) + _ce([0.5, 0.0, 1.5], 2)) / 2
    loss = rehearsal_loss(LOGITS, LABELS, REPLAY, loss="ce", seen_classes=[0, 1, 2], mask_unseen=True)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_without_replay_flags_every_row_is_new() -> None:
    expected = (_ce([1.0, 2.0], 1) + _ce([0.5, 0.0], 0)) / 2
    loss = rehearsal_loss(
        LOGITS, torch.tensor([1, 0]), None, loss="asymmetric", current_classes=[0, 1], seen_classes=[0, 1, 2]
    )
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_asymmetric_loss_gradient_leaves_old_classes_alone_on_new_rows() -> None:
    logits = LOGITS[:1].clone().requires_grad_(True)
    rehearsal_loss(
        logits, LABELS[:1], REPLAY[:1], loss="asymmetric", current_classes=[0, 1], seen_classes=[0, 1, 2]
    ).backward()
    assert logits.grad is not None
    assert logits.grad[0, 2].item() == 0.0
    assert logits.grad[0, 3].item() == 0.0
    assert logits.grad[0, 0].item() > 0.0


def test_asymmetric_loss_without_current_classes_is_rejected() -> None:
    with pytest.raises(ConfigError, match="current task's classes"):
        rehearsal_loss(LOGITS, LABELS, REPLAY, loss="asymmetric")


def test_unknown_loss_is_rejected() -> None:
    with pytest.raises(ConfigError, match="'loss' must be one of"):
        rehearsal_loss(LOGITS, LABELS, REPLAY, loss="focal")


def _tiny_trainer(tmp_path: object, **kwargs: object) -> object:
    from transformers import BertConfig, BertForSequenceClassification, TrainingArguments

    from rehearsal.replay.trainer import RehearsalTrainer

    config = BertConfig(
        vocab_size=50,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=16,
        num_labels=3,
    )
    args = TrainingArguments(output_dir=str(tmp_path), learning_rate=1e-4, use_cpu=True, report_to=[])
    return RehearsalTrainer(model=BertForSequenceClassification(config), args=args, **kwargs)


def test_head_learning_rate_puts_the_head_in_its_own_param_group(tmp_path: object) -> None:
    trainer: Any = _tiny_trainer(tmp_path, head_learning_rate=3e-3)
    optimizer = trainer.create_optimizer()
    body, head = optimizer.param_groups
    assert (body["lr"], head["lr"]) == (1e-4, 3e-3)
    head_params = {id(p) for p in trainer.model.classifier.parameters()}
    assert {id(p) for p in head["params"]} == head_params
    assert len(body["params"]) + len(head["params"]) == len(list(trainer.model.parameters()))


def test_without_head_learning_rate_every_parameter_gets_the_same_rate(tmp_path: object) -> None:
    trainer: Any = _tiny_trainer(tmp_path)
    optimizer = trainer.create_optimizer()
    assert {group["lr"] for group in optimizer.param_groups} == {1e-4}


def test_the_head_learning_rate_keeps_the_trainers_optimizer_choice(tmp_path: object) -> None:
    """With a head learning rate the optimizer is still the one ``args.optim`` names (fused AdamW by
    default: on a CPU its step costs a fifth of the per-parameter loop's), with the Trainer's betas."""
    import torch

    trainer: Any = _tiny_trainer(tmp_path, head_learning_rate=3e-3)
    optimizer = trainer.create_optimizer()
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.defaults["fused"] is True
    assert optimizer.defaults["betas"] == (trainer.args.adam_beta1, trainer.args.adam_beta2)
    assert {g["weight_decay"] for g in optimizer.param_groups} == {trainer.args.weight_decay}
