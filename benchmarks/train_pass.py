"""CPU seconds of one training pass through the run's Trainer, per length-bucket count and arithmetic.

One pass is ``rehearsal.training.trainer.train`` over a fixed set of WordNet glosses (the default
config's stream: 20 training glosses per class, capped at 32 tokens) with the default run's batch size
plus its replay share (24 rows a step), on one thread. Every setting trains its own copy of the same
starting weights; the settings take turns round by round, so a change in the machine's load falls on
all of them alike, and each setting's figure is its median over the rounds:

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/train_pass.py --buckets 1 2 3 4 6 --rounds 3

The loss after the pass is printed beside the time: a setting that trains faster by learning less shows
there. Prints a table and writes ``benchmarks/results/train_pass.json``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from typing import Any

import torch
from _harness import provenance, write_results


def _data(n: int, max_length: int) -> tuple[Any, Any, Any]:
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rehearsal.embedding import default_model_path
    from rehearsal.runner.tasks import load_wordnet_stream

    stream = load_wordnet_stream(max_train_per_class=20, max_test_per_class=10)
    examples = [e for task in stream.tasks for e in task.train][:n]
    labels = sorted({e.label for e in examples})
    path = str(default_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    encoded = tokenizer([e.text for e in examples], truncation=True, max_length=max_length)
    data = Dataset.from_dict(
        {**{k: list(v) for k, v in encoded.items()}, "labels": [labels.index(e.label) for e in examples]}
    )
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(labels))
    return model, tokenizer, data


def padding(data: Any, batch: int, buckets: list[int], draws: int = 2000) -> dict[int, float]:
    """Padded tokens per real token of random batches of ``data``, per bucket count (each bucket padded
    to its own longest row, rows sorted by length first, as ``rehearsal.methods.length_buckets`` does)."""
    import numpy as np

    lengths = np.asarray([len(ids) for ids in data["input_ids"]])
    rng = np.random.default_rng(0)
    out = {}
    for count in buckets:
        real = padded = 0
        for _ in range(draws):
            rows = np.sort(rng.choice(lengths, size=min(batch, len(lengths)), replace=False))
            for part in np.array_split(rows, count):
                real += int(part.sum())
                padded += int(part.max()) * len(part)
        out[count] = padded / real
    return out


def _one_pass(
    model: Any, tokenizer: Any, data: Any, buckets: int, bf16: bool, batch: int
) -> dict[str, float]:
    from transformers import DataCollatorWithPadding

    from rehearsal.training.trainer import TrainSettings, train

    settings = TrainSettings(
        batch_size=batch,
        epochs=1.0,
        learning_rate=3e-4,
        head_learning_rate=3e-3,
        seed=0,
        length_buckets=buckets,
        bf16=bf16,
        logging_steps=1,
    )
    labels = sorted(set(data["labels"]))
    with tempfile.TemporaryDirectory() as out:
        started = time.process_time()
        trainer = train(
            model,
            settings,
            output_dir=out,
            dataset=data,
            collator=DataCollatorWithPadding(tokenizer),
            seen_classes=labels,
        )
        cpu = time.process_time() - started
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    return {"cpu_seconds": cpu, "last_losses": statistics.fmean(losses[-5:])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--buckets", type=int, nargs="+", default=[1, 2, 3, 4, 6])
    parser.add_argument("--arithmetic", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--texts", type=int, default=480)
    parser.add_argument("--batch-size", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--name", default="train_pass", help="results/<name>.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    record = provenance(threads=1, texts=args.texts, batch_size=args.batch_size, rounds=args.rounds)
    base, tokenizer, data = _data(args.texts, 32)
    settings = [(b, a) for a in args.arithmetic for b in args.buckets]
    runs: dict[str, list[dict[str, float]]] = {f"{a} buckets={b}": [] for b, a in settings}
    for round_ in range(args.rounds):
        order = settings[round_ % len(settings) :] + settings[: round_ % len(settings)]
        for buckets, arithmetic in order:
            result = _one_pass(
                copy.deepcopy(base), tokenizer, data, buckets, arithmetic == "bf16", args.batch_size
            )
            runs[f"{arithmetic} buckets={buckets}"].append(result)
            print(
                f"round {round_} {arithmetic} buckets={buckets}: {result['cpu_seconds']:.2f} CPU s, "
                f"loss {result['last_losses']:.3f}",
                flush=True,
            )
    reference = statistics.median(r["cpu_seconds"] for r in runs[f"{args.arithmetic[0]} buckets=1"])
    table = {}
    print(f"\n| setting | CPU s (median of {args.rounds}) | ÷ {args.arithmetic[0]} one pass a batch | loss |")
    print("|---|---|---|---|")
    for name, rows in runs.items():
        cpu = statistics.median(r["cpu_seconds"] for r in rows)
        loss = statistics.fmean(r["last_losses"] for r in rows)
        table[name] = {"cpu_seconds": cpu, "ratio": cpu / reference, "loss": loss}
        print(f"| {name} | {cpu:.2f} | {cpu / reference:.2f} | {loss:.3f} |")
    pads = padding(data, args.batch_size, args.buckets)
    print("\n| buckets | padded tokens per real token |")
    print("|---|---|")
    for count, ratio in pads.items():
        print(f"| {count} | {ratio:.2f} |")
    path = write_results(args.name, {"runs": runs, "table": table, "padding": pads}, record)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
