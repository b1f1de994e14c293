"""The meta-learned start: Reptile's outer step, its task sampling, the memory as its source of tasks."""

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rehearsal.errors import ConfigError, ValidationError
from rehearsal.methods.meta import ReptileConfig, fine_tune, memory_examples, reptile, sample_task


def _model_and_data(tiny_model, tiny_stream):
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    examples = [ex for task in tiny_stream.tasks for ex in task.train]
    return model, tokenizer, [ex.text for ex in examples], [tiny_stream.label_id(ex.label) for ex in examples]


def _weights(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def _moved_by_one_iteration(tiny_model, tiny_stream, meta_step: float) -> list[torch.Tensor]:
    model, tokenizer, texts, labels = _model_and_data(tiny_model, tiny_stream)
    before = _weights(model)
    config = ReptileConfig(iterations=1, ways=2, shots=2, inner_steps=2, meta_step=meta_step)
    reptile(model, tokenizer, texts, labels, config, rng=np.random.default_rng(7), max_length=16)
    return [after - start for after, start in zip(_weights(model), before, strict=True)]


def test_reptile_moves_the_weights_meta_step_of_the_way_to_the_inner_result(tiny_model, tiny_stream):
    full = _moved_by_one_iteration(tiny_model, tiny_stream, 1.0)
    half = _moved_by_one_iteration(tiny_model, tiny_stream, 0.5)
    assert any(float(d.abs().max()) > 0 for d in full)  # the inner steps did move the weights
    assert all(torch.allclose(h, 0.5 * f, atol=1e-6) for h, f in zip(half, full, strict=True))


def test_reptile_with_meta_step_zero_keeps_the_start(tiny_model, tiny_stream):
    assert all(float(d.abs().max()) == 0.0 for d in _moved_by_one_iteration(tiny_model, tiny_stream, 0.0))


def test_sampled_task_has_ways_classes_of_shots_examples_each():
    labels = [0, 0, 0, 1, 1, 2, 2, 2, 3]
    picks, classes = sample_task(labels, ways=2, shots=3, rng=np.random.default_rng(0))
    assert classes == [0, 2]  # the only classes with three examples
    assert sorted(labels[i] for i in picks) == [0, 0, 0, 2, 2, 2]
    assert len(set(picks)) == 6


def test_a_task_with_more_ways_than_eligible_classes_is_refused():
    with pytest.raises(ValidationError, match="a 3-way task needs 3 classes with 2 examples; 2 have"):
        sample_task([0, 0, 1, 1, 2], ways=3, shots=2, rng=np.random.default_rng(0))


def test_fine_tune_takes_epochs_times_batches_steps_and_changes_the_weights(tiny_model, tiny_stream):
    model, tokenizer, texts, labels = _model_and_data(tiny_model, tiny_stream)
    before = _weights(model)
    steps = fine_tune(
        model,
        tokenizer,
        texts[:10],
        labels[:10],
        classes=sorted(set(labels[:10])),
        epochs=2,
        batch_size=4,
        learning_rate=1e-3,
        head_learning_rate=1e-2,
        rng=np.random.default_rng(0),
        max_length=16,
    )
    assert steps == 2 * 3
    assert any(not torch.equal(a, b) for a, b in zip(_weights(model), before, strict=True))


def test_memory_examples_draw_up_to_per_class_entries_of_each_label(filled_memory):
    texts, labels = memory_examples(filled_memory, per_class=4, rng=np.random.default_rng(0))
    assert sorted(labels) == sorted([label for label in range(6) for _ in range(4)])
    assert all(text.split()[0] in "abc" for text in texts)  # decrypted texts of the memory's entries


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("iterations", 0, "'iterations' must be an int >= 1"),
        ("ways", True, "'ways'"),
        ("meta_step", 1.5, "'meta_step' must be in \\[0, 1\\]"),
        ("inner_learning_rate", 0.0, "'inner_learning_rate' must be a positive number"),
    ],
)
def test_reptile_config_names_the_rejected_field(field, value, message):
    with pytest.raises(ConfigError, match=message):
        ReptileConfig(**{field: value})
