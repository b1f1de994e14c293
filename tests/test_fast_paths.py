"""Issue 30's faster paths: evaluation batched by length gives the reference path's answers, and a training
batch run as passes over rows of similar length gives the whole batch's logits and gradient."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _models import tiny_run_config

from rehearsal.errors import ConfigError
from rehearsal.methods.inference import batch_logits, length_order
from rehearsal.methods.length_buckets import length_bucketed_logits
from rehearsal.methods.predictors.features import encoder_features
from rehearsal.replay.trainer import RehearsalTrainer
from rehearsal.runner import loop as stream_module
from rehearsal.runner.config import RunConfig
from rehearsal.runner.tasks import TaskStream

TEXTS = [
    "a dog",
    "a large natural stream of water flowing in a channel to the sea or a lake or another river",
    "move fast",
    "an animal that barks and is kept as a pet by people in many parts of the world",
    "red",
    "the act of running quickly across an open field",
    "the pale yellow flower",
]


def _minilm() -> tuple[Any, Any]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rehearsal.embedding import default_model_path

    path = str(default_model_path())
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=5)
    return model, AutoTokenizer.from_pretrained(path)


def test_length_order_sorts_by_token_count_and_batches_come_back_in_the_given_order() -> None:
    model, tokenizer = _minilm()
    order = length_order(tokenizer, TEXTS, max_length=32)
    lengths = [len(tokenizer(TEXTS[i])["input_ids"]) for i in order]
    assert lengths == sorted(lengths)
    assert sorted(order.tolist()) == list(range(len(TEXTS)))
    assert order.tolist() != list(range(len(TEXTS)))  # the fixture is not sorted already

    sorted_logits = batch_logits(model, tokenizer, TEXTS, batch_size=3, max_length=32)
    given = batch_logits(model, tokenizer, TEXTS, batch_size=3, max_length=32, by_length=False)
    one_by_one = torch.cat([batch_logits(model, tokenizer, [t], batch_size=1, max_length=32) for t in TEXTS])
    torch.testing.assert_close(sorted_logits, given, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(sorted_logits, one_by_one, atol=1e-4, rtol=1e-4)

    features = encoder_features(model, tokenizer, TEXTS, batch_size=3, max_length=32)
    alone = encoder_features(model, tokenizer, TEXTS[1:2], batch_size=1, max_length=32)
    torch.testing.assert_close(features[1:2], alone, atol=1e-4, rtol=1e-4)
    assert batch_logits(model, tokenizer, [], batch_size=3, max_length=32).shape[0] == 0


def test_the_length_sorted_evaluation_gives_the_reference_paths_accuracy_matrix(
    tmp_path: Path, tiny_stream: TaskStream, master_key: None
) -> None:
    """A small real run (MiniLM, two tasks, a predictor and two read-outs): every matrix is identical."""

    def matrices(name: str, sorted_: bool) -> dict[str, Any]:
        config = tiny_run_config(
            tmp_path / name,
            None,  # type: ignore[arg-type]  (None: the bundled MiniLM)
            method="random",
            prediction="lda",
            readouts=["head", "ncm"],
            epochs=1.0,
            length_sorted_eval=sorted_,
        )
        result = stream_module.run(config, stream=tiny_stream)
        return {
            "run": result.matrix.matrix,
            **{k: m.matrix for k, m in result.readouts.items()},
        }

    fast, reference = matrices("fast", True), matrices("reference", False)
    assert set(fast) == {"run", "head", "ncm"}
    for name in fast:
        np.testing.assert_array_equal(fast[name], reference[name], err_msg=name)
    assert fast["run"].max() > 0.0  # the run learned something: the comparison is not of empty matrices


def _batch(tokenizer: Any) -> dict[str, torch.Tensor]:
    return dict(tokenizer(TEXTS * 2, truncation=True, max_length=32, padding=True, return_tensors="pt"))


@pytest.mark.parametrize("buckets", [2, 3])
def test_length_buckets_give_the_whole_batchs_logits_and_gradient(buckets: int) -> None:
    model, tokenizer = _minilm()
    model.eval()  # no dropout: the passes must agree to rounding
    inputs = _batch(tokenizer)
    labels = torch.arange(len(TEXTS) * 2) % 5

    def loss_and_grads(logits: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits, labels)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    whole = model(**inputs).logits
    bucketed = length_bucketed_logits(model, inputs, buckets)
    assert bucketed is not None
    torch.testing.assert_close(bucketed, whole, atol=1e-4, rtol=1e-4)
    loss_whole, grads_whole = loss_and_grads(model(**inputs).logits)
    bucketed = length_bucketed_logits(model, inputs, buckets)
    assert bucketed is not None
    loss_bucketed, grads_bucketed = loss_and_grads(bucketed)
    torch.testing.assert_close(loss_bucketed, loss_whole, atol=1e-5, rtol=1e-5)
    assert len(grads_bucketed) == len(grads_whole) > 0
    for got, want in zip(grads_bucketed, grads_whole, strict=True):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-3)


def test_length_buckets_stand_aside_where_they_do_not_apply() -> None:
    model, tokenizer = _minilm()
    inputs = _batch(tokenizer)
    assert length_bucketed_logits(model, inputs, 1) is None  # one bucket: the plain pass
    assert length_bucketed_logits(model, {"input_ids": inputs["input_ids"]}, 2) is None  # no mask
    left = {k: torch.flip(v, dims=[1]) for k, v in inputs.items()}  # padding on the left
    assert length_bucketed_logits(model, left, 2) is None
    few = {k: v[:3] for k, v in inputs.items()}
    assert length_bucketed_logits(model, few, 2) is None  # fewer rows than two per bucket


@pytest.mark.parametrize("bad", [0, -1, True, 1.5])
def test_a_bad_bucket_count_is_refused(bad: Any, tmp_path: Path) -> None:
    model, _ = _minilm()
    with pytest.raises(ConfigError, match="'length_buckets' must be a positive int"):
        RehearsalTrainer(model=model, length_buckets=bad)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"length_buckets": 0}, "length_buckets"),
        ({"length_sorted_eval": "yes"}, "true or false"),
    ],
)
def test_bad_speed_settings_are_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RunConfig(**changes)


def test_a_run_saved_before_length_buckets_resumes_only_as_it_was_trained() -> None:
    """A state file without ``length_buckets`` was trained with one pass per batch: it reads back as 1, keeps
    its id, and a resume under today's default (2) is a different experiment; the evaluation order is not."""
    from rehearsal.runner.state import comparable, saved_config

    old = RunConfig(length_buckets=1).to_dict()
    del old["length_buckets"], old["length_sorted_eval"]
    saved = saved_config(old)
    assert saved.length_buckets == 1
    assert "length_buckets" not in comparable(saved)  # the id it had before the setting existed
    assert comparable(RunConfig()) != comparable(saved)
    assert comparable(RunConfig(length_buckets=1, length_sorted_eval=False)) == comparable(saved)


def test_a_resume_under_other_settings_names_the_ones_the_run_was_trained_with(tmp_path: Path) -> None:
    import json

    from rehearsal.runner.state import STATE_FILE, load_state

    old = RunConfig(length_buckets=1).to_dict()
    del old["length_buckets"]  # a state written before the setting existed
    (tmp_path / STATE_FILE).write_text(json.dumps({"config": old}), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"changed: \['length_buckets'\] .*length_buckets=1: pass those"):
        load_state(tmp_path, RunConfig(), resume=True)
    assert load_state(tmp_path, RunConfig(length_buckets=1), resume=True) is not None


def test_bf16_training_runs_the_trainers_steps_under_bf16_autocast(tmp_path: Path) -> None:
    """``bf16_training`` reaches the training steps: their matrix products run in bf16, in every pass, while
    the weights stay fp32; without it they run in fp32, after a bf16 pass too."""
    from datasets import Dataset
    from transformers import DataCollatorWithPadding

    from rehearsal.training.trainer import TrainSettings, train

    model, tokenizer = _minilm()
    encoded = tokenizer(TEXTS, truncation=True, max_length=32)
    data = Dataset.from_dict({**{k: list(v) for k, v in encoded.items()}, "labels": [0, 1, 2, 3, 4, 0, 1]})
    seen: list[torch.dtype] = []
    hook = model.classifier.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    # Twice in bf16 (a second pass must not fall back to fp32), then fp32 (nothing of bf16 stays behind).
    passes = ((True, torch.bfloat16), (True, torch.bfloat16), (False, torch.float32))
    for i, (bf16, expected) in enumerate(passes):
        seen.clear()
        settings = TrainSettings(batch_size=4, epochs=1.0, learning_rate=1e-4, seed=0, bf16=bf16)
        train(
            model,
            settings,
            output_dir=tmp_path / str(i),
            dataset=data,
            collator=DataCollatorWithPadding(tokenizer),
            seen_classes=[0, 1, 2, 3, 4],
        )
        assert seen
        assert set(seen) == {expected}
        assert model.classifier.weight.dtype == torch.float32
    hook.remove()


def test_a_run_saved_before_bf16_training_reads_as_fp32_and_keeps_its_id() -> None:
    from rehearsal.runner.state import comparable, saved_config

    old = RunConfig().to_dict()
    del old["bf16_training"]
    saved = saved_config(old)
    assert saved.bf16_training is False
    assert "bf16_training" not in comparable(saved)
    assert comparable(RunConfig(bf16_training=True)) != comparable(saved)
    with pytest.raises(ConfigError, match="'bf16_training' must be true, false or"):
        RunConfig(bf16_training="yes")  # type: ignore[arg-type]


def test_bf16_training_learns_each_step_from_the_weights_the_last_step_left() -> None:
    """Each step's forward sees the weights the optimiser just changed: autocast's bf16 copies of the
    weights must not outlive one step (an autocast region around the whole pass reuses the first step's,
    and the same batch then gives the same loss at every step)."""
    import tempfile

    from datasets import Dataset
    from transformers import DataCollatorWithPadding

    from rehearsal.training.trainer import TrainSettings, train

    model, tokenizer = _minilm()
    encoded = tokenizer(TEXTS[:4], truncation=True, max_length=32)
    data = Dataset.from_dict({**{k: list(v) for k, v in encoded.items()}, "labels": [0, 1, 2, 3]})
    settings = TrainSettings(batch_size=4, epochs=6.0, learning_rate=5e-4, seed=0, bf16=True, logging_steps=1)
    with tempfile.TemporaryDirectory() as out:
        trainer = train(
            model,
            settings,
            output_dir=out,
            dataset=data,
            collator=DataCollatorWithPadding(tokenizer),
            seen_classes=[0, 1, 2, 3],
        )
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    assert len(losses) == 6
    assert len(set(losses)) == 6, losses  # one batch, six different losses: the weights moved each step
    assert losses[-1] < 0.7 * losses[0], losses


@pytest.mark.parametrize("bf16", [True, False])
def test_bf16_eval_runs_the_features_in_bf16_and_returns_float32(bf16: bool) -> None:
    from rehearsal.runner.strategies.base import eval_arithmetic

    model, tokenizer = _minilm()
    seen: list[torch.dtype] = []
    hook = model.classifier.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    reference = encoder_features(model, tokenizer, TEXTS, batch_size=3, max_length=32)
    seen.clear()
    with eval_arithmetic(RunConfig(bf16_eval=bf16)):
        features = encoder_features(model, tokenizer, TEXTS, batch_size=3, max_length=32)
    hook.remove()
    assert set(seen) == {torch.bfloat16 if bf16 else torch.float32}
    assert features.dtype == torch.float32
    if bf16:
        torch.testing.assert_close(features, reference, atol=0.1, rtol=0.05)
        assert not torch.equal(features, reference)
    else:
        assert torch.equal(features, reference)


def test_a_run_saved_before_bf16_eval_reads_as_fp32_and_keeps_its_id() -> None:
    from rehearsal.runner.state import comparable, saved_config

    old = RunConfig().to_dict()
    del old["bf16_eval"]
    saved = saved_config(old)
    assert saved.bf16_eval is False
    assert "bf16_eval" not in comparable(saved)
    assert comparable(RunConfig(bf16_eval=True)) != comparable(saved)
    with pytest.raises(ConfigError, match="'bf16_eval' must be true, false or"):
        RunConfig(bf16_eval="yes")  # type: ignore[arg-type]


def test_auto_bf16_follows_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """``"auto"`` is bf16 on a CPU with native bf16 and fp32 elsewhere (where bf16 autocast is slower);
    true and false mean what they say on any CPU."""
    import rehearsal.arithmetic as arithmetic

    for native in (True, False):
        monkeypatch.setattr(arithmetic, "cpu_has_native_bf16", lambda native=native: native)
        assert arithmetic.wants_bf16("auto") is native
        assert arithmetic.wants_bf16(True) is True
        assert arithmetic.wants_bf16(False) is False
    assert RunConfig(bf16_training="auto", bf16_eval="auto").bf16_training == "auto"
    with pytest.raises(ConfigError, match="'bf16_eval' must be true, false or"):
        RunConfig(bf16_eval="bf16")
