"""Online runs: test-then-train order, admission batch by batch, and a killed run resumed to the same figures.

The runs are real (the tiny BERT of ``tiny_model``, the real MiniLM encoder for the memory, real FAISS);
the spies below call through to the real steps and only record what they were given.
"""

from pathlib import Path

import numpy as np
import pytest
from _models import tiny_run_config
from safetensors.numpy import load_file

from rehearsal.errors import ConfigError
from rehearsal.runner import online
from rehearsal.runner.config import RunConfig
from rehearsal.runner.loop import run
from rehearsal.runner.online_config import OnlineConfig
from rehearsal.runner.online_stream import probe_sets, stream_batches

# 2 tasks x 12 training examples in batches of 4: 6 steps, a probe every 2, a checkpoint every 2.
STREAMING = {"batch_size": 4, "probe_every": 2, "probe_per_class": 1, "checkpoint_every": 2}


def _config(tmp_path: Path, model: str, name: str = "run", **changes: object) -> RunConfig:
    settings = {"method": "random", "online": True, "streaming": STREAMING, **changes}
    return tiny_run_config(tmp_path, model, output_dir=str(tmp_path / name), **settings)


def test_every_batch_is_predicted_before_it_is_trained_on_and_never_after(
    tmp_path, tiny_model, tiny_stream, keys, monkeypatch
):
    events: list[tuple[str, frozenset[str]]] = []
    predict, train = online._predict, online._train_step

    def spy_predict(o, texts):
        events.append(("predict", frozenset(texts)))
        return predict(o, texts)

    def spy_train(o, batch):
        events.append(("train", frozenset(batch.texts)))
        return train(o, batch)

    monkeypatch.setattr(online, "_predict", spy_predict)
    monkeypatch.setattr(online, "_train_step", spy_train)
    run(_config(tmp_path, tiny_model), stream=tiny_stream, keys=keys)
    trained = [(i, texts) for i, (kind, texts) in enumerate(events) if kind == "train"]
    assert len(trained) == 6
    for i, texts in trained:
        assert ("predict", texts) in events[:i]  # tested before its step
        assert all(not (texts & seen) for kind, seen in events[i + 1 :] if kind == "predict")


def test_each_batch_is_admitted_after_its_step_and_replay_draws_only_from_earlier_batches(
    tmp_path, tiny_model, tiny_stream, keys, monkeypatch
):
    admitted: list[list[int]] = []
    replayed: list[list[int]] = []
    admit, train = online._admit, online._train_step

    def spy_admit(o, batch):
        assert batch.index == len(admitted)  # once per batch, in stream order
        ids = admit(o, batch)
        admitted.append(ids)
        return ids

    def spy_train(o, batch):
        train(o, batch)
        replayed.append(list(o.collator.last_replay_ids))

    monkeypatch.setattr(online, "_admit", spy_admit)
    monkeypatch.setattr(online, "_train_step", spy_train)
    result = run(_config(tmp_path, tiny_model), stream=tiny_stream, keys=keys)
    assert [len(ids) for ids in admitted] == [4] * 6  # keep_all admits every example of every batch
    assert replayed[0] == []  # the first batch has no past to replay
    assert sum(map(len, replayed)) == result.cost.replayed_examples > 0
    for step, ids in enumerate(replayed):
        earlier = {i for batch in admitted[:step] for i in batch}
        assert set(ids) <= earlier


@pytest.mark.parametrize("prediction", ["head", "ncm"])
def test_online_run_killed_and_resumed_gives_the_same_figures(
    tmp_path, tiny_model, tiny_stream, keys, monkeypatch, prediction
):
    streaming = {**STREAMING, "refit_every": 2}

    def config(name: str) -> RunConfig:
        return _config(tmp_path, tiny_model, name, prediction=prediction, streaming=streaming)

    whole = run(config("whole"), stream=tiny_stream, keys=keys).to_dict()
    train = online._train_step

    def dies_at_step_3(o, batch):
        if batch.index == 3:  # the fault: the process dies mid-stream, one step after a checkpoint
            raise KeyboardInterrupt
        train(o, batch)

    monkeypatch.setattr(online, "_train_step", dies_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        run(config("killed"), stream=tiny_stream, keys=keys)
    monkeypatch.setattr(online, "_train_step", train)
    resumed = run(config("killed"), stream=tiny_stream, keys=keys, resume=True).to_dict()
    if prediction != "head":
        assert whole["online"]["predictor_fits"] >= 3  # a window of 2 steps over 6, and each new class

    for key in ("online_accuracy", "anytime_auc", "stability_gaps", "trace", "per_task_online_accuracy"):
        assert resumed["online"][key] == whole["online"][key], key
    assert resumed["accuracy"] == whole["accuracy"]
    assert resumed["cost"]["replayed_examples"] == whole["cost"]["replayed_examples"]
    ours = load_file(tmp_path / "killed" / "weights" / "step_6" / "model.safetensors")
    theirs = load_file(tmp_path / "whole" / "weights" / "step_6" / "model.safetensors")
    assert all(np.array_equal(ours[k], theirs[k]) for k in theirs)


def test_online_results_carry_anytime_figures_and_the_probe_plot(tmp_path, tiny_model, tiny_stream, keys):
    result = run(_config(tmp_path, tiny_model, method="naive"), stream=tiny_stream, keys=keys)
    figures = result.to_dict()["online"]
    assert figures["tested_examples"] == 24
    assert figures["trace"]["steps"] == [0, 2, 3, 4, 6]  # task starts 0 and 3, every 2 steps, the end
    assert [g["task"] for g in figures["stability_gaps"]] == ["verbs"]
    assert 0.0 < figures["probe_share"] < 1.0
    assert (tmp_path / "run" / "accuracy_anytime.png").stat().st_size > 0
    assert "online accuracy" in (tmp_path / "run" / "results.md").read_text()


def test_a_novel_batch_restarts_the_learning_rate_warmup(tmp_path, tiny_model, tiny_stream, keys):
    streaming = {**STREAMING, "rewarmup_threshold": 0.0, "rewarmup_steps": 2}
    config = _config(tmp_path, tiny_model).replace(streaming=OnlineConfig(**streaming))
    result = run(config, stream=tiny_stream, keys=keys)
    assert result.to_dict()["online"]["rewarmups"]  # every batch is "novel" against threshold 0
    assert (
        run(_config(tmp_path, tiny_model, "plain"), stream=tiny_stream, keys=keys).to_dict()["online"][
            "rewarmups"
        ]
        == []
    )


def test_stream_batches_keep_tasks_in_order_and_every_example_once(tiny_stream):
    batches = stream_batches(tiny_stream, 5, seed=0)
    assert [b.task for b in batches] == ["living"] * 3 + ["verbs"] * 3  # 12 per task: 5 + 5 + 2
    assert [b.first_of_task for b in batches] == [True, False, False, True, False, False]
    seen = sorted(ex.text for b in batches for ex in b.examples)
    assert seen == sorted(ex.text for t in tiny_stream.tasks for ex in t.train)


def test_probe_sets_take_the_first_test_examples_of_each_class(tiny_stream):
    texts, labels = probe_sets(tiny_stream, 1)["living"]
    living = tiny_stream.task("living")
    assert len(texts) == len(living.labels) == 3
    assert sorted(labels) == sorted(tiny_stream.label_id(lab) for lab in living.labels)
    assert texts[0] == living.test[0].text


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"method": "mir"}, "an online run's 'method' must be one of"),
        ({"method": "naive", "prediction": "ncm"}, "keeps none"),
        ({"method": "random", "prediction": "lda", "gate": {}}, "not gated"),
        (
            {"method": "random", "prediction": "ncm", "streaming": {"refit_every": 4, "checkpoint_every": 6}},
            "must be a multiple of 'streaming.refit_every'",
        ),
    ],
)
def test_online_config_refuses_what_needs_task_boundaries(changes, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig(online=True, **changes)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("batch_size", 0, "'streaming.batch_size' must be an int >= 1"),
        ("probe_every", True, "'streaming.probe_every'"),
        ("clip_norm", -1.0, "'streaming.clip_norm' must be a positive number or None"),
        ("rewarmup_threshold", 1.5, "'streaming.rewarmup_threshold' must be in \\[0, 1\\]"),
        ("novelty_calibration", 1, "'streaming.novelty_calibration' must be an int >= 2"),
    ],
)
def test_online_config_names_the_rejected_field(field, value, message):
    with pytest.raises(ConfigError, match=message):
        OnlineConfig(**{field: value})


def test_memory_prediction_online_answers_through_the_memory(
    tmp_path, tiny_model, tiny_stream, keys, monkeypatch
):
    """After the first batch every prediction goes through the fitted predictor, never the head."""
    from rehearsal.runner import online_predict

    heads, fitted = [], []
    predict = online_predict.OnlinePredictor.predict

    def spy(self, model, tokenizer, step, texts, head):
        def counted_head():
            heads.append(step)
            return head()

        out = predict(self, model, tokenizer, step, texts, counted_head)
        fitted.append(self.classifier is not None)
        return out

    monkeypatch.setattr(online_predict.OnlinePredictor, "predict", spy)
    config = _config(tmp_path, tiny_model, prediction="ncm", streaming={**STREAMING, "refit_every": 2})
    result = run(config, stream=tiny_stream, keys=keys).to_dict()
    assert heads == [0]  # the first batch only: the memory was empty
    assert fitted[1:]
    assert all(fitted[1:])
    assert result["online"]["predictor_fits"] >= 2
