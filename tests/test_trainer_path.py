"""The Trainer path carries what made class-incremental runs work (issue 29): one set of replay defaults,
RehearsalTrainer's head remedies (unseen classes masked, weights aligned, a head learning rate), and the
run's accuracy matrix from a callback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tomllib
import torch
import yaml
from datasets import Dataset
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertForSequenceClassification,
    DataCollatorWithPadding,
    TrainingArguments,
)

import rehearsal as rh
from rehearsal.embedding import default_model_path
from rehearsal.methods.calibration import classification_head

ROOT = Path(__file__).resolve().parent.parent


def test_replay_defaults_are_class_balanced_random_at_half() -> None:
    config = rh.ReplayConfig()
    assert (config.mode, config.balance, config.ratio) == ("random", "class", 0.5)
    assert config.replay_count(16) == 16


def test_the_bundled_configs_replay_at_the_library_default_ratio() -> None:
    toml = tomllib.loads((ROOT / "configs" / "default.toml").read_text())
    assert toml["replay"]["ratio"] == rh.ReplayConfig().ratio
    assert yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())["replay"]["ratio"] == 0.5


def test_a_calibration_that_needs_data_is_refused_on_the_trainer_path(tmp_path, tiny_model) -> None:
    with pytest.raises(rh.ConfigError, match=r"'calibration' must be one of .* got 'bias_correction'"):
        rh.RehearsalTrainer(
            model=BertForSequenceClassification.from_pretrained(tiny_model),
            args=_args(tmp_path, max_steps=1),
            calibration="bias_correction",
        )


def _args(tmp_path: Path, **changes: Any) -> TrainingArguments:
    settings: dict[str, Any] = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=8,
        remove_unused_columns=False,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        seed=0,
        disable_tqdm=True,
    )
    return TrainingArguments(**{**settings, **changes})


@pytest.fixture
def tiny_setup(tmp_path: Path, tiny_model: str, tiny_stream: Any) -> dict[str, Any]:
    """A memory holding the tiny stream's first task (synthetic vectors) and its second task to train."""
    rng = np.random.default_rng(0)
    keys = rh.KeyRing.generate()
    old, new = tiny_stream.tasks
    vectors = rng.normal(size=(len(old.train) + len(new.train), 16)).astype(np.float32)
    memory = rh.RehearsalMemory.create(tmp_path / "memory", keys=keys, dim=16, encoder_name="synthetic")
    memory.add(
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
    collator = rh.RehearsalCollator(memory, DataCollatorWithPadding(tokenizer), tokenizer, task=new.name)
    old_ids = sorted({tiny_stream.label_id(e.label) for e in old.train})
    new_ids = sorted({tiny_stream.label_id(e.label) for e in new.train})
    yield {"memory": memory, "train": train, "collator": collator, "old": old_ids, "new": new_ids}
    memory.close()


def test_rehearsal_trainer_reads_the_class_sets_from_the_data_and_the_memory(
    tmp_path, tiny_model, tiny_setup
) -> None:
    trainer = rh.RehearsalTrainer(
        model=BertForSequenceClassification.from_pretrained(tiny_model),
        args=_args(tmp_path, max_steps=1),
        train_dataset=tiny_setup["train"],
        data_collator=tiny_setup["collator"],
        mask_unseen=True,
    )
    trainer.train()
    assert trainer.current_classes == tiny_setup["new"]
    assert trainer.seen_classes == sorted(tiny_setup["old"] + tiny_setup["new"])


def test_weight_aligning_after_training_matches_the_old_rows_norm(tmp_path, tiny_model, tiny_setup) -> None:
    model = BertForSequenceClassification.from_pretrained(tiny_model)
    trainer = rh.RehearsalTrainer(
        model=model,
        args=_args(tmp_path, max_steps=2, learning_rate=1e-2),
        train_dataset=tiny_setup["train"],
        data_collator=tiny_setup["collator"],
        calibration="weight_aligning",
        head_learning_rate=5e-2,
    )
    trainer.train()
    weight = classification_head(model).weight.detach()
    old_norm = weight[tiny_setup["old"]].norm(dim=1).mean()
    new_norm = weight[tiny_setup["new"]].norm(dim=1).mean()
    assert trainer.calibration_logs["calibration_scale"] != 1.0
    assert torch.isclose(new_norm, old_norm, rtol=1e-4)


def test_accuracy_matrix_callback_fills_a_row_per_training(tmp_path, tiny_model, tiny_setup, tiny_stream):
    from rehearsal.runner.trainer_matrix import AccuracyMatrixCallback

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tests = {
        t.name: ([e.text for e in t.test], [tiny_stream.label_id(e.label) for e in t.test])
        for t in tiny_stream.tasks
    }
    matrix = AccuracyMatrixCallback(tests, tokenizer, max_length=16)
    matrix.task = tiny_stream.tasks[1].name  # the first task was trained elsewhere: this is row 2
    rh.RehearsalTrainer(
        model=BertForSequenceClassification.from_pretrained(tiny_model),
        args=_args(tmp_path, max_steps=1),
        train_dataset=tiny_setup["train"],
        data_collator=tiny_setup["collator"],
        callbacks=[matrix],
    ).train()
    filled = matrix.matrix.matrix
    assert np.isnan(filled[0]).all()
    assert np.isfinite(filled[1]).all()


# -- the README's Trainer diff on a three-task stream: real MiniLM, real Trainer, real encrypted memory ----


def _task_data(stream: rh.TaskStream, task: Any, tokenizer: Any, encoder: Any) -> Dataset:
    data = Dataset.from_dict(
        {
            "text": [e.text for e in task.train],
            "label": [stream.label_id(e.label) for e in task.train],
            "task": [task.name] * len(task.train),
        }
    )
    data = rh.embed_dataset(data, encoder)
    return data.map(lambda b: tokenizer(b["text"], truncation=True, max_length=32), batched=True)


@pytest.mark.slow
def test_the_readme_trainer_diff_keeps_every_old_task_above_chance(tmp_path, encoder) -> None:
    stream = rh.load_wordnet_stream(
        max_train_per_class=16, max_test_per_class=10, tasks=["living", "physical", "modifiers"]
    )
    model_dir = str(default_model_path())
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=len(stream.labels))
    tests = {
        t.name: ([e.text for e in t.test], [stream.label_id(e.label) for e in t.test]) for t in stream.tasks
    }
    matrix = rh.AccuracyMatrixCallback(tests, tokenizer, max_length=32)
    memory = rh.RehearsalMemory.create(tmp_path / "memory", keys=rh.KeyRing.generate(), encoder=encoder)
    for task in stream.tasks:
        train = _task_data(stream, task, tokenizer, encoder)
        collator = rh.RehearsalCollator(memory, DataCollatorWithPadding(tokenizer), tokenizer, task=task.name)
        rh.RehearsalTrainer(
            model=model,
            args=_args(tmp_path, num_train_epochs=3, per_device_train_batch_size=16, learning_rate=3e-4),
            train_dataset=train,
            data_collator=collator,
            callbacks=[
                rh.RehearsalCallback(memory, collator=collator, dataset=train, task=task.name),
                matrix,
            ],
            mask_unseen=True,
            calibration="weight_aligning",
            head_learning_rate=3e-3,
        ).train()
    memory.close()
    final = matrix.matrix.matrix[-1]
    for j, task in enumerate(stream.tasks):
        assert final[j] > 1.0 / len(task.labels), (task.name, final.tolist())


def test_random_replay_logs_no_nan_statistics(tmp_path, tiny_model, tiny_setup) -> None:
    trainer = rh.RehearsalTrainer(
        model=BertForSequenceClassification.from_pretrained(tiny_model),
        args=_args(tmp_path, max_steps=2, logging_steps=1),
        train_dataset=tiny_setup["train"],
        data_collator=tiny_setup["collator"],
    )
    trainer.train()
    replaying = [h for h in trainer.state.log_history if h.get("replay/examples", 0) > 0]
    assert replaying
    values = [v for h in replaying for k, v in h.items() if k.startswith("replay/")]
    assert all(v == v for v in values)  # no NaN
    assert all(h["replay/old_tasks_covered"] == 1.0 for h in replaying)
