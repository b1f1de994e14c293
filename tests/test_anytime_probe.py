"""Probing seen tasks during training: which tasks a probe measures, and the Trainer callback's cadence."""

import json

import numpy as np
from datasets import Dataset
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)

from rehearsal.runner.anytime import ProbeTrace
from rehearsal.runner.anytime_probe import ProbeCallback, probe_seen_tasks
from rehearsal.runner.online_stream import probe_sets


def test_a_probe_measures_only_the_tasks_that_began_before_its_step():
    trace = ProbeTrace(["a", "b", "c"])
    trace.start_task("a", 0)
    trace.start_task("b", 5)
    probes = {"a": (["x", "y"], [1, 2]), "b": (["z"], [3]), "c": (["w"], [4])}
    asked: list[list[str]] = []

    def predict(texts):
        asked.append(texts)
        return np.asarray([1, 0, 3][: len(texts)])  # a: one of two right; b: right

    probe_seen_tasks(trace, 5, probes, predict)  # b begins at 5: not seen yet
    probe_seen_tasks(trace, 6, probes, predict)
    assert asked == [["x", "y"], ["x", "y", "z"]]
    assert trace.accuracy == [{"a": 0.5}, {"a": 0.5, "b": 1.0}]


def test_probe_callback_probes_at_the_phase_start_and_every_n_run_steps(tmp_path, tiny_model, tiny_stream):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model)
    task = tiny_stream.task("verbs")
    rows = tokenizer([ex.text for ex in task.train], truncation=True, max_length=16)
    train = Dataset.from_dict({**rows, "labels": [tiny_stream.label_id(ex.label) for ex in task.train]})
    trace = ProbeTrace([t.name for t in tiny_stream.tasks])
    trace.start_task("living", 0)
    trace.start_task("verbs", 9)  # a second phase: the first took 9 steps
    callback = ProbeCallback(trace, probe_sets(tiny_stream, 1), tokenizer, every=2, offset=9, max_length=16)
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        num_train_epochs=1,
        use_cpu=True,
        report_to=[],
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train,
        data_collator=DataCollatorWithPadding(tokenizer),
        callbacks=[callback],
    )
    trainer.train()  # 12 examples in batches of 4: run steps 10, 11, 12
    assert trace.steps == [9, 10, 12]
    assert list(trace.accuracy[0]) == ["living"]  # at the phase start only the earlier task
    assert list(trace.accuracy[1]) == ["living", "verbs"]
    assert callback.last_step == 12
    assert callback.seconds > 0


def test_an_offline_run_with_probe_offline_probes_across_its_phases(tmp_path, tiny_model, tiny_stream, keys):
    from _models import tiny_run_config

    from rehearsal.runner.loop import run

    streaming = {"probe_offline": True, "probe_every": 1, "probe_per_class": 1}
    config = tiny_run_config(tmp_path, tiny_model, method="random", batch_size=4, streaming=streaming)
    run(config, stream=tiny_stream, keys=keys)
    saved = json.loads((tmp_path / "run" / "anytime.json").read_text())
    assert saved["phase_steps"] == [3, 3]  # 12 examples per task in batches of 4
    assert saved["trace"]["steps"] == [0, 1, 2, 3, 4, 5, 6]
    assert saved["trace"]["task_starts"] == [0, 3]
    assert [gap["task"] for gap in saved["stability_gaps"]] == ["verbs"]
    assert (tmp_path / "run" / "accuracy_anytime.png").is_file()
