"""MIR: the interference ranking on a model whose answer is computed independently, and the Trainer hook."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import (
    AutoTokenizer,
    BertForSequenceClassification,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)
from transformers.modeling_outputs import SequenceClassifierOutput

import rehearsal as rh
from rehearsal.replay.collator import REPLAY_CANDIDATE, REPLAY_FLAG
from rehearsal.replay.interference import rank_candidates
from rehearsal.replay.trainer import RehearsalTrainer

DIM, CLASSES = 5, 4


class Linear(torch.nn.Module):
    """logits = W x + b, with b frozen: the virtual step may move W only."""

    def __init__(self, rng: np.random.Generator) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(
            torch.as_tensor(rng.normal(size=(CLASSES, DIM)), dtype=torch.float64)
        )
        self.bias = torch.nn.Parameter(
            torch.as_tensor(rng.normal(size=CLASSES), dtype=torch.float64), requires_grad=False
        )

    def forward(self, x: torch.Tensor) -> SequenceClassifierOutput:
        return SequenceClassifierOutput(logits=x @ self.weight.T + self.bias)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _ce(w: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return -np.log(_softmax(x @ w.T + b)[np.arange(len(y)), y])


def _ce_loss(reduction: str) -> Any:
    return lambda logits, labels: torch.nn.functional.cross_entropy(logits, labels, reduction=reduction)


def test_mir_keeps_the_candidates_whose_loss_rises_most_and_restores_the_model() -> None:
    rng = np.random.default_rng(0)
    model = Linear(rng)
    x_new, y_new = rng.normal(size=(6, DIM)), rng.integers(CLASSES, size=6)
    x_pool, y_pool = rng.normal(size=(20, DIM)), rng.integers(CLASSES, size=20)
    lr = 0.5
    # Independently: the gradient of the new rows' mean CE with respect to W, one SGD step, the increase.
    w, b = model.weight.detach().numpy().copy(), model.bias.detach().numpy().copy()
    p = _softmax(x_new @ w.T + b)
    p[np.arange(6), y_new] -= 1.0
    w_after = w - lr * (p.T @ x_new) / 6
    rise = _ce(w_after, b, x_pool, y_pool) - _ce(w, b, x_pool, y_pool)
    expected = list(np.argsort(-rise, kind="stable")[:2])  # ratio 0.25 of 6 new rows -> 2 replay slots

    flags = torch.as_tensor([0] * 6 + [REPLAY_CANDIDATE] * 20)
    inputs = {
        "x": torch.as_tensor(np.vstack([x_new, x_pool])),
        "labels": torch.as_tensor(np.concatenate([y_new, y_pool])),
        REPLAY_FLAG: flags,
    }
    model.train()
    choice = rank_candidates(
        model,
        inputs,
        config=rh.ReplayConfig(mode="mir", ratio=0.25),
        new_loss=_ce_loss("mean"),
        row_loss=_ce_loss("none"),
        step_sizes=lambda params: [lr] * len(params),
    )
    assert choice.kept == expected
    np.testing.assert_allclose(choice.scores.numpy(), rise, rtol=1e-9, atol=1e-12)
    assert torch.equal(choice.inputs["x"][6:], inputs["x"][6 + torch.as_tensor(expected)])
    assert choice.inputs[REPLAY_FLAG].tolist() == [0] * 6 + [1, 1]
    # The model is exactly as it was: weights bit for bit, no gradient left behind, still in train mode.
    assert np.array_equal(model.weight.detach().numpy(), w)
    assert model.weight.grad is None
    assert model.training


class EncoderAndHead(torch.nn.Module):
    """logits = head(tanh(encoder(x))): the "head" scope may step the head only."""

    def __init__(self, rng: np.random.Generator) -> None:
        super().__init__()
        self.config = SimpleNamespace(num_labels=CLASSES)
        self.encoder = torch.nn.Linear(DIM, 6).double()
        self.head = torch.nn.Linear(6, CLASSES).double()
        with torch.no_grad():
            for param in self.parameters():
                param.copy_(torch.as_tensor(rng.normal(size=param.shape)))

    def forward(self, x: torch.Tensor) -> SequenceClassifierOutput:
        return SequenceClassifierOutput(logits=self.head(torch.tanh(self.encoder(x))))


def test_mir_head_scope_steps_the_head_alone() -> None:
    rng = np.random.default_rng(1)
    model = EncoderAndHead(rng)
    x_new, y_new = rng.normal(size=(8, DIM)), rng.integers(CLASSES, size=8)
    x_pool, y_pool = rng.normal(size=(16, DIM)), rng.integers(CLASSES, size=16)
    lr = 0.7
    e, e_b = (t.detach().numpy().copy() for t in (model.encoder.weight, model.encoder.bias))
    w, b = (t.detach().numpy().copy() for t in (model.head.weight, model.head.bias))
    f_new, f_pool = np.tanh(x_new @ e.T + e_b), np.tanh(x_pool @ e.T + e_b)
    p = _softmax(f_new @ w.T + b)
    p[np.arange(8), y_new] -= 1.0
    w_after, b_after = w - lr * (p.T @ f_new) / 8, b - lr * p.mean(axis=0)
    rise = _ce(w_after, b_after, f_pool, y_pool) - _ce(w, b, f_pool, y_pool)
    expected = list(np.argsort(-rise, kind="stable")[:4])

    inputs = {
        "x": torch.as_tensor(np.vstack([x_new, x_pool])),
        "labels": torch.as_tensor(np.concatenate([y_new, y_pool])),
        REPLAY_FLAG: torch.as_tensor([0] * 8 + [REPLAY_CANDIDATE] * 16),
    }
    choice = rank_candidates(
        model,
        inputs,
        config=rh.ReplayConfig(mode="mir", ratio=1 / 3, mir_scope="head"),
        new_loss=_ce_loss("mean"),
        row_loss=_ce_loss("none"),
        step_sizes=lambda params: [lr] * len(params),
    )
    assert choice.kept == expected
    np.testing.assert_allclose(choice.scores.numpy(), rise, rtol=1e-9, atol=1e-12)
    assert np.array_equal(model.head.weight.detach().numpy(), w)
    assert np.array_equal(model.encoder.weight.detach().numpy(), e)


def test_mir_ranking_differs_from_pool_order() -> None:
    """The kept candidates are not simply the pool's first rows (the degenerate 'MIR = random' case)."""
    rng = np.random.default_rng(3)
    model = Linear(rng)
    x = torch.as_tensor(rng.normal(size=(8 + 40, DIM)))
    labels = torch.as_tensor(rng.integers(CLASSES, size=48))
    inputs = {"x": x, "labels": labels, REPLAY_FLAG: torch.as_tensor([0] * 8 + [REPLAY_CANDIDATE] * 40)}
    choice = rank_candidates(
        model,
        inputs,
        config=rh.ReplayConfig(mode="mir", ratio=0.5),
        new_loss=_ce_loss("mean"),
        row_loss=_ce_loss("none"),
        step_sizes=lambda params: [1.0] * len(params),
    )
    assert len(choice.kept) == 8
    assert choice.kept != list(range(8))
    assert all(
        choice.scores[i] >= choice.scores[j] for i in choice.kept for j in range(40) if j not in choice.kept
    )


# -- the Trainer hook, on a tiny BERT and a memory of synthetic vectors --------------------------------


@pytest.fixture
def setup(tmp_path: Path, tiny_model: str, tiny_stream: Any) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    keys = rh.KeyRing.generate()
    old, new = tiny_stream.tasks
    vectors = rng.normal(size=(len(old.train) + len(new.train), 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    memory = tmp_path / "memory"
    with rh.RehearsalMemory.create(memory, keys=keys, dim=16, encoder_name="synthetic") as mem:
        mem.add(
            [e.text for e in old.train],
            vectors=vectors[: len(old.train)],
            metadata=[{"task": e.task, "label": tiny_stream.label_id(e.label)} for e in old.train],
        )
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    texts = [e.text for e in new.train]
    train = Dataset.from_dict(
        {
            **tokenizer(texts, truncation=True, max_length=16),
            "labels": [tiny_stream.label_id(e.label) for e in new.train],
            "text": texts,
            "embedding": vectors[len(old.train) :].tolist(),
        }
    )
    return {"keys": keys, "memory": memory, "tokenizer": tokenizer, "train": train, "task": new.name}


def _collator(setup: dict[str, Any], **config: Any) -> rh.RehearsalCollator:
    replay = rh.ReplayConfig(**{"mode": "mir", "ratio": 0.25, "pool_factor": 2.0, **config})
    return rh.RehearsalCollator(
        setup["memory"],
        DataCollatorWithPadding(setup["tokenizer"]),
        setup["tokenizer"],
        replay,
        keys=setup["keys"],
        task=setup["task"],
    )


def _args(tmp_path: Path) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=6,
        max_steps=2,
        logging_steps=1,
        remove_unused_columns=False,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        seed=0,
    )


@pytest.mark.parametrize("scope", ["trainable", "head"])
def test_rehearsal_trainer_trains_on_new_rows_plus_the_top_candidates(
    tmp_path: Path, tiny_model: str, setup: dict[str, Any], scope: str
) -> None:
    collator = _collator(setup, mir_scope=scope)
    trainer = RehearsalTrainer(
        model=BertForSequenceClassification.from_pretrained(tiny_model),
        args=_args(tmp_path),
        train_dataset=setup["train"],
        data_collator=collator,
        callbacks=[rh.RehearsalCallback(setup["memory"], keys=setup["keys"], collator=collator)],
    )
    trainer.train()
    logged = [h for h in trainer.state.log_history if "replay/candidates" in h]
    assert logged
    assert logged[0]["replay/scoring_ms_per_batch"] > 0
    assert logged[0]["replay/virtual_step_ms_per_batch"] > 0
    # 2 steps of 6 new rows -> 2 replay slots each -> pools of 4, of which the 2 that interfere most are
    # kept. (The DataLoader collates a batch ahead, so per-log counts straddle steps: compare the totals.)
    rest = collator.pop_stats()
    assert sum(h["replay/candidates"] for h in logged) + rest.candidates == 8
    assert sum(h["replay/examples"] for h in logged) + rest.replayed == 4
    assert trainer.last_interference is not None
    assert len(trainer.last_interference.kept) == 2


def test_mir_logs_the_tasks_and_similarity_of_the_candidates_it_keeps(
    tmp_path: Path, tiny_model: str, setup: dict[str, Any]
) -> None:
    collator = _collator(setup, random_share=0.0)
    trainer = RehearsalTrainer(
        model=BertForSequenceClassification.from_pretrained(tiny_model),
        args=_args(tmp_path),
        train_dataset=setup["train"],
        data_collator=collator,
        callbacks=[rh.RehearsalCallback(setup["memory"], keys=setup["keys"], collator=collator)],
    )
    trainer.train()
    replaying = [h for h in trainer.state.log_history if h.get("replay/examples", 0) > 0]
    assert replaying
    assert all(h["replay/old_tasks_covered"] == 1.0 for h in replaying)
    assert all(-1.0 <= h["replay/mean_similarity"] <= 1.0 for h in replaying)


def test_mir_with_a_plain_trainer_fails_at_train_begin(
    tmp_path: Path, tiny_model: str, setup: dict[str, Any]
) -> None:
    collator = _collator(setup)
    trainer = Trainer(
        model=BertForSequenceClassification.from_pretrained(tiny_model),
        args=_args(tmp_path),
        train_dataset=setup["train"],
        data_collator=collator,
        callbacks=[rh.RehearsalCallback(setup["memory"], keys=setup["keys"], collator=collator)],
    )
    with pytest.raises(rh.ConfigError, match=r"needs rehearsal\.replay\.trainer\.RehearsalTrainer"):
        trainer.train()
    assert trainer.state.global_step == 0


def test_mir_collator_without_the_trainer_refuses_a_training_batch(setup: dict[str, Any]) -> None:
    collator = _collator(setup)
    with pytest.raises(rh.ConfigError, match="mode 'mir' needs"):
        collator([setup["train"][i] for i in range(6)])


def test_mir_collator_sends_a_flagged_pool_of_the_configured_size(setup: dict[str, Any]) -> None:
    collator = _collator(setup, pool_factor=3.0)
    collator.attach_interference_hook()
    batch = collator([setup["train"][i] for i in range(6)])
    flags = batch[REPLAY_FLAG].tolist()
    assert flags == [0] * 6 + [REPLAY_CANDIDATE] * 6  # 2 slots x pool_factor 3
    assert len(set(collator.last_replay_ids)) == 6
    assert collator.stats.replayed == 0
    assert collator.stats.candidates == 6


def test_mir_leaves_evaluation_batches_untouched(setup: dict[str, Any]) -> None:
    collator = _collator(setup)
    collator.attach_interference_hook()
    rows = [{k: v for k, v in setup["train"][i].items() if k != "embedding"} for i in range(5)]
    batch = collator(rows)
    assert batch["input_ids"].shape[0] == 5
    assert REPLAY_FLAG not in batch
    assert collator.stats.passthrough_batches == 1
    assert collator.stats.candidates == 0
