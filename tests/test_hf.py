"""The Trainer integration end to end: real MiniLM, real HF Trainer, real encrypted memory."""

from __future__ import annotations

import os
import shutil
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import pytest
from datasets import Dataset
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorForLanguageModeling,
    DataCollatorWithPadding,
    GPT2Config,
    GPT2LMHeadModel,
    Trainer,
    TrainingArguments,
)

import rehearsal as rh
from rehearsal.config import ReplayConfig
from rehearsal.crypto.keys import KeyRing
from rehearsal.embedding import default_model_path
from rehearsal.errors import ConfigError
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.replay.callback import RehearsalCallback
from rehearsal.replay.collator import RehearsalCollator, embed_dataset
from rehearsal.runner.tasks import load_wordnet_stream

MODEL = str(default_model_path())


@pytest.fixture(scope="module")
def stream():
    return load_wordnet_stream(max_train_per_class=8, max_test_per_class=2, tasks=["living", "verbs"])


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(MODEL)


@pytest.fixture(scope="module")
def keys():
    return KeyRing.generate()


@pytest.fixture(scope="module")
def memory_template(tmp_path_factory, stream, keys, encoder):
    """A memory holding the first task's training texts, embedded once for the whole module."""
    first = stream.tasks[0]
    path = tmp_path_factory.mktemp("hf") / "memory"
    with RehearsalMemory.create(path, keys=keys, encoder=encoder) as mem:
        mem.add(
            [e.text for e in first.train],
            metadata=[{"task": e.task, "label": stream.label_id(e.label)} for e in first.train],
        )
    return path


@pytest.fixture
def memory_path(tmp_path, memory_template):
    """A fresh copy of the template memory per test: trainers admit into it."""
    path = tmp_path / "memory"
    shutil.copytree(memory_template, path)
    return path


@pytest.fixture(scope="module")
def new_task(stream, tokenizer, encoder):
    second = stream.tasks[1]
    ds = Dataset.from_dict(
        {
            "text": [e.text for e in second.train],
            "label": [stream.label_id(e.label) for e in second.train],
            "task": [e.task for e in second.train],
        }
    )
    ds = embed_dataset(ds, encoder)
    return ds.map(lambda b: tokenizer(b["text"], truncation=True, max_length=48), batched=True)


def _args(tmp_path, **overrides):
    base = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=12,
        max_steps=3,
        logging_steps=1,
        remove_unused_columns=False,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        seed=0,
    )
    base.update(overrides)
    return TrainingArguments(**base)


def _classifier(stream):
    return AutoModelForSequenceClassification.from_pretrained(MODEL, num_labels=len(stream.labels))


def test_classification_trainer_replays_and_admits_once(
    tmp_path, stream, tokenizer, keys, memory_path, new_task
):
    collator = RehearsalCollator(
        memory_path,
        DataCollatorWithPadding(tokenizer),
        tokenizer,
        ReplayConfig(ratio=0.25),
        keys=keys,
        task="verbs",
    )
    callback = RehearsalCallback(memory_path, keys=keys, collator=collator, dataset=new_task, task="verbs")
    trainer = Trainer(
        model=_classifier(stream),
        args=_args(tmp_path),
        train_dataset=new_task,
        data_collator=collator,
        callbacks=[callback],
    )
    trainer.train()
    logged = [h for h in trainer.state.log_history if "replay/examples" in h]
    assert logged
    assert all(h["replay/per_batch"] == 4 for h in logged)
    assert all(h["replay/old_tasks_covered"] == 1 for h in logged)
    with RehearsalMemory.open(memory_path, keys=keys, read_only=True) as mem:
        tasks = mem.stats()["tasks"]
    assert tasks == {"living": 40, "verbs": len(new_task)}


def test_replay_batch_carries_old_labels_and_no_current_task(tokenizer, keys, memory_path, new_task, stream):
    collator = RehearsalCollator(
        memory_path,
        DataCollatorWithPadding(tokenizer),
        tokenizer,
        ReplayConfig(ratio=0.5, mode="hybrid"),
        keys=keys,
        task="verbs",
    )
    batch = collator([new_task[i] for i in range(6)])
    assert batch["input_ids"].shape[0] == 12
    living = {stream.label_id(label) for label in stream.task("living").labels}
    assert set(batch["labels"][6:].tolist()) <= living
    with RehearsalMemory.open(memory_path, keys=keys, read_only=True) as mem:
        replayed_tasks = {row.task for row in mem.entries(collator.last_replay_ids).values()}
    assert replayed_tasks == {"living"}


def test_same_seed_gives_same_replay_ids_and_ranks_differ(
    tokenizer, keys, memory_path, new_task, monkeypatch
):
    rows = [new_task[i] for i in range(8)]

    def replay_ids(seed, rank):
        monkeypatch.setenv("RANK", str(rank))
        collator = RehearsalCollator(
            memory_path,
            DataCollatorWithPadding(tokenizer),
            tokenizer,
            ReplayConfig(mode="hybrid", seed=seed),
            keys=keys,
            task="verbs",
        )
        collator(rows)
        return list(collator.last_replay_ids)

    first = replay_ids(0, 0)
    assert first == replay_ids(0, 0)
    assert first != replay_ids(0, 1)
    assert first != replay_ids(1, 0)


def test_remove_unused_columns_is_refused_with_the_fix(
    tmp_path, stream, tokenizer, keys, memory_path, new_task
):
    collator = RehearsalCollator(memory_path, DataCollatorWithPadding(tokenizer), tokenizer, keys=keys)
    trainer = Trainer(
        model=_classifier(stream),
        args=_args(tmp_path, remove_unused_columns=True),
        train_dataset=new_task,
        data_collator=collator,
        callbacks=[RehearsalCallback(memory_path, keys=keys, collator=collator)],
    )
    with pytest.raises(ConfigError, match="remove_unused_columns=False"):
        trainer.train()


def test_evaluation_batches_pass_through_without_replay(tokenizer, keys, memory_path, new_task):
    collator = RehearsalCollator(memory_path, DataCollatorWithPadding(tokenizer), tokenizer, keys=keys)
    batch = collator([new_task.remove_columns(["embedding"])[i] for i in range(5)])
    assert batch["input_ids"].shape[0] == 5
    assert collator.stats.passthrough_batches == 1
    assert collator.stats.replayed == 0


def test_an_embedded_eval_set_gets_no_replay_during_or_after_training(
    tmp_path, stream, tokenizer, keys, memory_path, new_task
):
    # The observation: predict() on 16 embedded rows returned 22 predictions.
    sizes: list[int] = []
    base = DataCollatorWithPadding(tokenizer)

    def recording(rows):
        sizes.append(len(rows))
        return base(rows)

    collator = RehearsalCollator(
        memory_path, recording, tokenizer, ReplayConfig(ratio=0.25), keys=keys, task="verbs"
    )
    callback = RehearsalCallback(memory_path, keys=keys, collator=collator, dataset=new_task, task="verbs")
    evaluated = new_task.select(range(16))
    trainer = Trainer(
        model=_classifier(stream),
        args=_args(tmp_path, eval_strategy="steps", eval_steps=1, per_device_eval_batch_size=8),
        train_dataset=new_task,
        eval_dataset=evaluated,
        data_collator=collator,
        callbacks=[callback],
    )
    assert trainer.predict(evaluated).predictions.shape[0] == 16  # before training, too
    trainer.train()
    assert trainer.predict(evaluated).predictions.shape[0] == 16
    # Training batches are 12 new + 4 replay; evaluation (after each of the 3 steps) and prediction batches
    # are the 8 rows asked for, through the same collator, and replay resumes after each evaluation.
    assert sizes.count(8) == 2 + 3 * 2 + 2
    assert sizes.count(16) >= 3
    assert set(sizes) == {8, 16}
    evals = [h for h in trainer.state.log_history if "eval_loss" in h]
    assert len(evals) == 3
    assert not any("replay/examples" in h for h in evals)


def test_replay_statistics_reach_reporting_callbacks_through_rehearsal_trainer(
    tmp_path, stream, tokenizer, keys, memory_path, new_task
):
    from transformers import TrainerCallback

    from rehearsal.replay.trainer import RehearsalTrainer

    class Reporter(TrainerCallback):  # stands where TensorBoard / W&B stand: before our callback
        def __init__(self) -> None:
            self.seen: list[dict[str, float]] = []

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.seen.append(dict(logs or {}))

    collator = RehearsalCollator(
        memory_path, DataCollatorWithPadding(tokenizer), tokenizer, ReplayConfig(), keys=keys, task="verbs"
    )
    callback = RehearsalCallback(memory_path, keys=keys, collator=collator, dataset=new_task, task="verbs")
    reporter = Reporter()
    RehearsalTrainer(
        model=_classifier(stream),
        args=_args(tmp_path),
        train_dataset=new_task,
        data_collator=collator,
        callbacks=[reporter, callback],
    ).train()
    # Every step's log carries the statistics (the DataLoader collates one batch ahead, so the first
    # log counts two batches of 4).
    reported = [logs["replay/examples"] for logs in reporter.seen if "replay/examples" in logs]
    assert len(reported) == 3
    assert all(n > 0 and n % 4 == 0 for n in reported)


def test_a_collator_that_can_replay_nothing_says_why_once(tmp_path, tokenizer, keys, new_task, encoder):
    path = tmp_path / "named"
    texts = ["a small domestic cat", "a large striped wild cat", "an oak tree", "a pine tree"]
    with RehearsalMemory.create(path, keys=keys, encoder=encoder) as mem:
        mem.add(
            texts, metadata=[{"task": "nature", "label": name} for name in ("cat", "cat", "tree", "tree")]
        )
    rows = [new_task[i] for i in range(4)]
    half = ReplayConfig(ratio=0.5)  # 4 replay rows for 4 new ones: the whole memory
    base = DataCollatorWithPadding(tokenizer)
    silent = RehearsalCollator(path, base, tokenizer, half, keys=keys, task="verbs")
    why = r"could use none \(4 with a class name as label.*label2id=model\.config\.label2id"
    with pytest.warns(RuntimeWarning, match=why):
        batch = silent(rows)
    assert batch["input_ids"].shape[0] == 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once, not on every batch
        silent(rows)
    named = RehearsalCollator(
        path, base, tokenizer, half, keys=keys, task="verbs", label2id={"cat": 7, "tree": 9}
    )
    batch = named(rows)
    assert batch["input_ids"].shape[0] == 8
    assert sorted(batch["labels"][4:].tolist()) == [7, 7, 9, 9]


def test_causal_lm_with_language_modeling_collator(tmp_path, tokenizer, keys, memory_path, new_task):
    config = GPT2Config(
        vocab_size=tokenizer.vocab_size,
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=2,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = GPT2LMHeadModel(config)
    lm_data = new_task.remove_columns(["label"])
    base = DataCollatorForLanguageModeling(tokenizer, mlm=False)
    collator = RehearsalCollator(
        memory_path, base, tokenizer, ReplayConfig(ratio=0.25, max_replay_tokens=200), keys=keys, task="verbs"
    )
    callback = RehearsalCallback(memory_path, keys=keys, collator=collator, dataset=lm_data, task="verbs")
    trainer = Trainer(
        model=model, args=_args(tmp_path), train_dataset=lm_data, data_collator=collator, callbacks=[callback]
    )
    result = trainer.train()
    assert np.isfinite(result.training_loss)
    logged = [h for h in trainer.state.log_history if "replay/tokens" in h]
    assert logged
    assert all(0 < h["replay/tokens"] <= 200 for h in logged)
    assert len(callback.admitted) == len(lm_data)


def test_peft_lora_model_trains_with_replay(tmp_path, stream, tokenizer, keys, memory_path, new_task):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(
        _classifier(stream),
        LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], task_type="SEQ_CLS"),
    )
    collator = RehearsalCollator(
        memory_path, DataCollatorWithPadding(tokenizer), tokenizer, ReplayConfig(), keys=keys, task="verbs"
    )
    trainer = Trainer(
        model=model,
        args=_args(tmp_path),
        train_dataset=new_task,
        data_collator=collator,
        callbacks=[RehearsalCallback(memory_path, keys=keys, collator=collator)],
    )
    trainer.train()
    assert any("replay/examples" in h for h in trainer.state.log_history)


def test_trl_sft_trainer_trains_with_replay(tmp_path, keys, memory_path, encoder):
    trl = pytest.importorskip("trl")
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling as TrlLanguageModelingCollator

    tokenizer = AutoTokenizer.from_pretrained(MODEL)
    tokenizer.eos_token = tokenizer.sep_token  # TRL appends an EOS; the BERT vocabulary calls it [SEP]
    texts = [f"new fact {i} about how dogs fetch" for i in range(24)]
    data = embed_dataset(Dataset.from_dict({"text": texts}), encoder)
    model = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=tokenizer.vocab_size,
            n_positions=64,
            n_embd=32,
            n_layer=2,
            n_head=2,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    collator = RehearsalCollator(
        memory_path,
        TrlLanguageModelingCollator(pad_token_id=tokenizer.pad_token_id),
        tokenizer,
        ReplayConfig(ratio=0.25),
        keys=keys,
        task="dogs",
    )
    args = trl.SFTConfig(
        output_dir=str(tmp_path / "sft"),
        max_steps=2,
        per_device_train_batch_size=6,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        remove_unused_columns=False,
        max_length=32,
        save_strategy="no",
    )
    trainer = trl.SFTTrainer(
        model=model,
        args=args,
        train_dataset=data,
        processing_class=tokenizer,
        data_collator=collator,
        callbacks=[RehearsalCallback(memory_path, keys=keys, collator=collator)],
    )
    trainer.train()
    logged = [h for h in trainer.state.log_history if "replay/examples" in h]
    assert logged
    assert all(h["replay/per_batch"] == 2 for h in logged)


@pytest.mark.slow
def test_torchrun_two_ranks_draw_different_replay_and_admit_once(tmp_path, keys, memory_path, new_task):
    import json
    import shutil
    import socket
    import subprocess
    import sys

    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    assert torchrun is not None
    data = new_task.select(range(24)).map(lambda row: {"label": row["label"] % 4})
    data.save_to_disk(str(tmp_path / "data"))
    env = {**os.environ, "REHEARSAL_MASTER_KEY": keys.export_base64(), "OMP_NUM_THREADS": "1"}
    script = os.path.join(os.path.dirname(__file__), "scripts", "ddp_replay.py")
    with socket.socket() as probe:  # a free port: torchrun's own port 0 handling hangs on some hosts
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = subprocess.run(
        [
            torchrun,
            "--nproc_per_node=2",
            f"--master_port={port}",
            "--master_addr=127.0.0.1",
            script,
            str(memory_path),
            str(tmp_path / "data"),
            str(tmp_path),
        ],
        check=False,
        env=env,
        timeout=420,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert all(len(step) == 4 for rank in ranks for step in rank["replay"])
    assert ranks[0]["replay"] != ranks[1]["replay"]
    assert ranks[0]["admitted"] == 24
    assert ranks[1]["admitted"] == 0
    with RehearsalMemory.open(memory_path, keys=keys, read_only=True) as mem:
        assert mem.stats()["tasks"] == {"living": 40, "new": 24}


def test_the_callback_refits_the_memory_predictor_and_evaluate_reports_both_accuracies(
    tmp_path, stream, tokenizer, keys, memory_path, new_task
):
    """RehearsalCallback(predictor=...) refits class means on the memory once the new task is admitted, and
    memory_compute_metrics puts the head's and the memory's accuracy side by side in trainer.evaluate()."""
    model = _classifier(stream)
    collator = RehearsalCollator(
        memory_path, DataCollatorWithPadding(tokenizer), tokenizer, keys=keys, task="verbs"
    )
    with RehearsalMemory.open(memory_path, keys=keys) as memory:
        classifier = rh.MemoryClassifier(model, tokenizer, memory, "ncm", max_length=48)
        callback = RehearsalCallback(
            memory, collator=collator, dataset=new_task, task="verbs", predictor=classifier
        )
        test = stream.tasks[0].test + stream.tasks[1].test
        evaluation = Dataset.from_dict(
            {"text": [e.text for e in test], "label": [stream.label_id(e.label) for e in test]}
        ).map(lambda b: tokenizer(b["text"], truncation=True, max_length=48), batched=True)
        trainer = Trainer(
            model=model,
            args=_args(tmp_path),
            train_dataset=new_task,
            eval_dataset=evaluation.remove_columns(["text"]),
            data_collator=collator,
            callbacks=[callback],
            compute_metrics=rh.memory_compute_metrics(classifier, evaluation["text"], refit=False),
        )
        trainer.train()
        assert sorted(classifier.fitted_on) == memory.ids()  # both tasks' entries, the new ones included
        assert classifier.predictor.classes == sorted({stream.label_id(e.label) for e in test})
        metrics = trainer.evaluate()
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0
    assert 0.0 <= metrics["eval_memory_accuracy"] <= 1.0
    texts = evaluation["text"]
    expected = float(np.mean(classifier.predict(texts) == np.asarray(evaluation["label"])))
    assert metrics["eval_memory_accuracy"] == pytest.approx(expected)
