"""A meta-learned start (first-order Reptile over tasks from the memory) against plain fine-tuning: accuracy
on a new task after 8, 32 and 128 of its examples, and what the old tasks lose, paired by seed.

Per seed: MiniLM gets a head trained for one epoch on the old WordNet tasks (living, physical, abstract,
verbs; ``--old-per-class`` examples per class), which also go into an encrypted memory. From those
weights three starts: **plain** (as they are), **joint** (the same sampled tasks and inner steps as
Reptile, with ``meta_step = 1``: ordinary fine-tuning on the memory, the compute-matched control) and
**reptile** (``meta_step = --meta-step``). Each start is then adapted on n = 8, 32, 128 examples of the new
task (modifiers, class-balanced, ``--epochs`` passes) and measured on the new task's test set (over its
own classes) and on the old tasks' test sets (over every class).

    .venv/bin/python benchmarks/meta_start.py --seeds 0 1 2

Prints a table and writes benchmarks/results/meta_start.json (commit, command, load).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
from _harness import provenance, write_results
from _paired import describe, paired_difference

from rehearsal.crypto.keys import KeyRing
from rehearsal.embedding import default_model_path, load_encoder
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.methods.inference import predict_labels
from rehearsal.methods.meta import ReptileConfig, fine_tune, memory_examples, reptile
from rehearsal.runner.tasks import Example, TaskStream, load_wordnet_stream

OLD = ("living", "physical", "abstract", "verbs")
NEW = "modifiers"
SHOTS = [8, 32, 128]  # examples of the new task; --sizes changes them
STARTS = ("plain", "joint", "reptile")
TEST_PER_CLASS = 4  # old tasks; the new task keeps 25 test examples per class


def _ids(stream: TaskStream, examples: list[Example]) -> tuple[list[str], list[int]]:
    return [ex.text for ex in examples], [stream.label_id(ex.label) for ex in examples]


def _accuracy(
    model: Any, tokenizer: Any, texts: list[str], labels: list[int], allowed: list[int] | None
) -> float:
    predicted = predict_labels(model, tokenizer, texts, batch_size=64, max_length=32, allowed=allowed)
    return float(np.mean(predicted == np.asarray(labels)))


def _balanced(stream: TaskStream, n: int, rng: np.random.Generator) -> tuple[list[str], list[int]]:
    """``n`` training examples of the new task, the same number of each class (seeded)."""
    task = stream.task(NEW)
    per_class = n // len(task.labels)
    chosen: list[Example] = []
    for label in task.labels:
        members = [ex for ex in task.train if ex.label == label]
        chosen.extend(members[int(i)] for i in rng.choice(len(members), size=per_class, replace=False))
    return _ids(stream, chosen)


def _starts(
    base: Any, tokenizer: Any, memory_data: tuple[list[str], list[int]], seed: int, args: argparse.Namespace
) -> dict[str, Any]:
    starts = {"plain": base}
    for name, step in (("joint", 1.0), ("reptile", args.meta_step)):
        model = copy.deepcopy(base)
        config = ReptileConfig(
            iterations=args.iterations,
            ways=args.ways,
            shots=args.shots,
            inner_steps=args.inner_steps,
            meta_step=step,
        )
        # The same seed for both: the same sampled tasks, the same inner batches.
        reptile(model, tokenizer, *memory_data, config, rng=np.random.default_rng([seed, 1]), max_length=32)
        starts[name] = model
    return starts


def one_seed(stream: TaskStream, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = str(default_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    import torch

    torch.manual_seed(seed)
    base = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(stream.labels))
    old_train = _ids(stream, [ex for name in OLD for ex in stream.task(name).train])
    old_test = _ids(stream, [ex for name in OLD for ex in stream.task(name).test])
    new_test = _ids(stream, list(stream.task(NEW).test))
    old_classes = sorted(set(old_train[1]))
    new_classes = sorted({stream.label_id(lab) for lab in stream.task(NEW).labels})
    rng = np.random.default_rng([seed, 0])
    fine_tune(
        base,
        tokenizer,
        *old_train,
        classes=old_classes,
        epochs=1,
        batch_size=16,
        learning_rate=args.lr,
        head_learning_rate=args.head_lr,
        rng=rng,
        max_length=32,
    )
    with (
        tempfile.TemporaryDirectory() as folder,
        RehearsalMemory.create(
            Path(folder) / "memory", keys=KeyRing.generate(), encoder=load_encoder()
        ) as memory,
    ):
        memory.add(old_train[0], metadata=[{"task": "old", "label": y} for y in old_train[1]])
        memory_data = memory_examples(
            memory, per_class=args.old_per_class, rng=np.random.default_rng([seed, 2])
        )
    starts = _starts(base, tokenizer, memory_data, seed, args)
    out: dict[str, Any] = {}
    for name, start in starts.items():
        old_before = _accuracy(start, tokenizer, *old_test, None)
        row: dict[str, Any] = {"old_at_start": old_before}
        for n in SHOTS:
            model = copy.deepcopy(start)
            shots = _balanced(stream, n, np.random.default_rng([seed, 3, n]))
            fine_tune(
                model,
                tokenizer,
                *shots,
                classes=new_classes,
                epochs=args.epochs,
                batch_size=8,
                learning_rate=args.lr,
                head_learning_rate=args.head_lr,
                rng=np.random.default_rng([seed, 4, n]),
                max_length=32,
            )
            row[f"new_{n}"] = _accuracy(model, tokenizer, *new_test, new_classes)
            row[f"forgetting_{n}"] = old_before - _accuracy(model, tokenizer, *old_test, None)
        out[name] = row
        print(f"seed {seed} {name}: {row}", file=sys.stderr, flush=True)
    return out


def summarize(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ["old_at_start", *(f"new_{n}" for n in SHOTS), *(f"forgetting_{n}" for n in SHOTS)]
    table: dict[str, Any] = {
        name: {k: describe([s[name][k] for s in per_seed]) for k in keys} for name in STARTS
    }
    for other in ("plain", "joint"):
        table[f"reptile_vs_{other}"] = {
            k: paired_difference([s["reptile"][k] for s in per_seed], [s[other][k] for s in per_seed])
            for k in keys
        }
    return table


def to_markdown(table: dict[str, Any]) -> str:
    def cell(stat: dict[str, Any]) -> str:
        return f"{stat['mean']:.3f} ± {stat['sd']:.3f}"

    def diff(stat: dict[str, Any]) -> str:
        if stat["ci_low"] is None:
            return f"{100 * stat['mean']:+.1f}"
        return f"{100 * stat['mean']:+.1f} [{100 * stat['ci_low']:+.1f}, {100 * stat['ci_high']:+.1f}]"

    head = "| start | old tasks at start | " + " | ".join(f"new after {n}" for n in SHOTS) + " | "
    head += " | ".join(f"forgetting after {n}" for n in SHOTS) + " |"
    lines = [head, "|---" * (2 + 2 * len(SHOTS)) + "|"]
    keys = ["old_at_start", *(f"new_{n}" for n in SHOTS), *(f"forgetting_{n}" for n in SHOTS)]
    for name in STARTS:
        lines.append(f"| {name} | " + " | ".join(cell(table[name][k]) for k in keys) + " |")
    for other in ("plain", "joint"):
        row = table[f"reptile_vs_{other}"]
        lines.append(
            f"| reptile − {other}, points [95% CI] | " + " | ".join(diff(row[k]) for k in keys) + " |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--old-per-class", type=int, default=8, help="old-task examples per class (train and memory)"
    )
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--ways", type=int, default=4)
    parser.add_argument("--shots", type=int, default=4)
    parser.add_argument("--inner-steps", type=int, default=3)
    parser.add_argument("--meta-step", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=2, help="passes over the new task's n examples")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--head-lr", type=float, default=3e-3)
    parser.add_argument("--sizes", nargs="+", type=int, default=SHOTS, help="new-task examples to adapt on")
    args = parser.parse_args(argv)
    SHOTS[:] = args.sizes
    record = provenance(seeds=args.seeds)
    stream = load_wordnet_stream(max_train_per_class=max(args.old_per_class, 32), max_test_per_class=25)
    # Old tasks train on their first old_per_class examples per class; the new task keeps 32 per class.
    capped = load_wordnet_stream(
        max_train_per_class=args.old_per_class, max_test_per_class=TEST_PER_CLASS, tasks=list(OLD)
    )
    stream = TaskStream.from_tasks([*capped.tasks, stream.task(NEW)])
    settings = {k: str(v) for k, v in vars(args).items()}
    per_seed: list[dict[str, Any]] = []
    for seed in args.seeds:  # the JSON is rewritten after every seed: a cut-short grid keeps what it measured
        per_seed.append(one_seed(stream, seed, args))
        table = summarize(per_seed)
        markdown = to_markdown(table)
        payload = {"table": table, "per_seed": per_seed, "markdown": markdown, "settings": settings}
        write_results("meta_start", {**payload, "seeds_done": args.seeds[: len(per_seed)]}, record)
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
