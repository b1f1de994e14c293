"""The Trainer path on a three-task class-incremental stream: what the README's diff buys, before and after
issue 29.

MiniLM (the packaged encoder) fine-tuned on WordNet's "living", "physical" and "modifiers" tasks in turn
(16 classes, one shared head), each variant from the same initial weights, with the run's accuracy matrix
filled by ``rh.AccuracyMatrixCallback``:

- ``plain``: an ordinary Trainer script, no replay;
- ``diff-before``: the README's diff as it was (plain Trainer, collator + callback, the old defaults:
  hybrid replay at ratio 0.25);
- ``defaults``: the same diff with today's defaults (class-balanced random replay at ratio 0.5);
- ``diff-after``: today's diff: ``RehearsalTrainer`` with the defaults, ``mask_unseen``, weight aligning
  and a 10x head learning rate.

    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS=1 .venv/bin/python benchmarks/trainer_path.py \\
        --out benchmarks/results/trainer_path.json
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch
from _report import print_and_save  # benchmarks/ is on sys.path when run as a script
from datasets import Dataset
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)

import rehearsal as rh
from rehearsal.embedding import default_model_path

HERE = Path(__file__).resolve().parent
TASKS = ["living", "physical", "modifiers"]
VARIANTS = ("plain", "diff-before", "defaults", "diff-after")


def task_data(stream: rh.TaskStream, task: Any, tokenizer: Any, encoder: Any) -> Dataset:
    data = Dataset.from_dict(
        {
            "text": [e.text for e in task.train],
            "label": [stream.label_id(e.label) for e in task.train],
            "task": [task.name] * len(task.train),
        }
    )
    data = rh.embed_dataset(data, encoder)
    return data.map(lambda b: tokenizer(b["text"], truncation=True, max_length=32), batched=True)


def run_variant(
    variant: str, stream: rh.TaskStream, encoder: Any, tmp: Path, epochs: float
) -> dict[str, Any]:
    model_dir = str(default_model_path())
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=len(stream.labels))
    tests = {
        t.name: ([e.text for e in t.test], [stream.label_id(e.label) for e in t.test]) for t in stream.tasks
    }
    matrix = rh.AccuracyMatrixCallback(tests, tokenizer, max_length=32)
    memory = rh.RehearsalMemory.create(tmp / variant, keys=rh.KeyRing.generate(), encoder=encoder)
    replay = rh.ReplayConfig(mode="hybrid", ratio=0.25) if variant == "diff-before" else rh.ReplayConfig()
    started = time.perf_counter()
    replayed = 0
    for task in stream.tasks:
        train = task_data(stream, task, tokenizer, encoder)
        args = TrainingArguments(
            output_dir=str(tmp / "out"),
            num_train_epochs=epochs,
            per_device_train_batch_size=16,
            learning_rate=3e-4,
            remove_unused_columns=False,
            report_to=[],
            use_cpu=True,
            save_strategy="no",
            seed=0,
            disable_tqdm=True,
            logging_steps=5,
        )
        base = DataCollatorWithPadding(tokenizer)
        if variant == "plain":
            columns = ["text", "embedding", "task"]
            trainer: Trainer = Trainer(
                model=model,
                args=args,
                train_dataset=train.remove_columns(columns),
                data_collator=base,
                callbacks=[matrix],
            )
        else:
            collator = rh.RehearsalCollator(memory, base, tokenizer, replay, task=task.name)
            callbacks = [
                rh.RehearsalCallback(memory, collator=collator, dataset=train, task=task.name),
                matrix,
            ]
            if variant == "diff-after":
                trainer = rh.RehearsalTrainer(
                    model=model,
                    args=args,
                    train_dataset=train,
                    data_collator=collator,
                    callbacks=callbacks,
                    mask_unseen=True,
                    calibration="weight_aligning",
                    head_learning_rate=3e-3,
                )
            else:
                trainer = Trainer(
                    model=model, args=args, train_dataset=train, data_collator=collator, callbacks=callbacks
                )
        trainer.train()
        replayed += sum(int(h.get("replay/examples", 0)) for h in trainer.state.log_history)
    memory.close()
    r = matrix.matrix
    final = r.matrix[-1]
    return {
        "acc": round(r.average_accuracy(), 4),
        "final_row": {name: round(float(final[j]), 4) for j, name in enumerate(r.task_names)},
        "min_old_task": round(float(min(final[:-1])), 4),
        "replayed": replayed,
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-per-class", type=int, default=16)
    parser.add_argument("--test-per-class", type=int, default=10)
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", type=Path, default=HERE / "out" / "trainer_path.json")
    args = parser.parse_args()
    stream = rh.load_wordnet_stream(
        max_train_per_class=args.train_per_class, max_test_per_class=args.test_per_class, tasks=TASKS
    )
    encoder = rh.load_encoder()
    result: dict[str, Any] = {
        "tasks": TASKS,
        "classes": len(stream.labels),
        "chance_per_task": {t.name: round(1 / len(t.labels), 3) for t in stream.tasks},
        "train_per_class": args.train_per_class,
        "test_per_class": args.test_per_class,
        "epochs": args.epochs,
    }
    with tempfile.TemporaryDirectory() as tmp:
        for variant in args.variants.split(","):
            result[variant] = run_variant(variant, stream, encoder, Path(tmp), args.epochs)
            print(variant, result[variant], flush=True)
    result["load_average_1m"] = round(os.getloadavg()[0], 2)
    print_and_save(result, args.out)


if __name__ == "__main__":
    main()
