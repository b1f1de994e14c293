"""Replay overhead inside the HF Trainer: time per step with replay ÷ the plain Trainer, same effective batch.

The plain run trains on batches of ``--batch`` new examples; each replay run trains on batches of
``batch - replay`` new examples topped up with ``replay`` examples from an encrypted memory of N entries
(so both see the same number of rows per step). Memories are filled with real WordNet glosses (cycled)
and seeded clustered synthetic vectors; queries are real MiniLM embeddings. After a warm-up run, the
runs go round in rotated rounds (plain, replay N1, replay N2; then N1, N2, plain; ...) and are compared
on the median iteration time, collation included, since this machine is shared and noisy. The
collator's own timers give the breakdown (search, decrypt, tokenize).

    python benchmarks/overhead.py --sizes 100000 1000000 --steps 10 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np
from datasets import Dataset
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from transformers.utils import logging as hf_logging

from rehearsal.config import ReplayConfig
from rehearsal.crypto import KeyRing
from rehearsal.datasets import load_wordnet_stream
from rehearsal.embedding import default_model_path, load_encoder
from rehearsal.hf import RehearsalCollator, embed_dataset
from rehearsal.memory import RehearsalMemory

OUT = Path(__file__).parent / "out"


class StepTimer(TrainerCallback):
    """Wall time between consecutive step ends: the whole iteration, batch collation (where replay
    happens) included, not only the forward/backward pass that on_step_begin/on_step_end bracket."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._last: float | None = None

    def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        now = time.perf_counter()
        if self._last is not None:
            self.times.append(now - self._last)
        self._last = now


def build_memory(path: Path, n: int, texts: list[str], keys: KeyRing, n_labels: int) -> float:
    if (path / "memory.json").exists():
        return 0.0  # built by an earlier run (--dir)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(512, 384)).astype(np.float32)
    started = time.perf_counter()
    with RehearsalMemory.create(path, keys=keys, dim=384) as memory:
        for start in range(0, n, 20_000):
            size = min(20_000, n - start)
            vectors = centres[rng.integers(0, 512, size)] + 0.3 * rng.normal(size=(size, 384)).astype(
                np.float32
            )
            batch = [texts[(start + i) % len(texts)] for i in range(size)]
            meta = [{"task": "old", "label": int(label)} for label in rng.integers(0, n_labels, size)]
            memory.add(batch, vectors=vectors, metadata=meta)
    return time.perf_counter() - started


def train(data: Dataset, collator, batch: int, steps: int, n_labels: int, workdir: str) -> list[float]:  # type: ignore[no-untyped-def]
    model = AutoModelForSequenceClassification.from_pretrained(str(default_model_path()), num_labels=n_labels)
    timer = StepTimer()
    args = TrainingArguments(
        output_dir=workdir, per_device_train_batch_size=batch, max_steps=steps, remove_unused_columns=False,
        report_to=[], use_cpu=True, save_strategy="no", logging_strategy="no", disable_tqdm=True, seed=0,
        dataloader_drop_last=True,
    )  # fmt: skip
    Trainer(model=model, args=args, train_dataset=data, data_collator=collator, callbacks=[timer]).train()
    return timer.times[2:]  # the first steps pay for warm-up


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--replay", type=int, default=8)
    parser.add_argument("--dir", type=Path, help="keep the memories here (and reuse them on a rerun)")
    args = parser.parse_args(argv)
    hf_logging.set_verbosity_error()

    stream = load_wordnet_stream()
    n_labels = len(stream.labels)
    tokenizer = AutoTokenizer.from_pretrained(str(default_model_path()))
    new = stream.task("verbs").train
    rows = args.steps * args.batch
    data = Dataset.from_dict({
        "text": [new[i % len(new)].text for i in range(rows)],
        "label": [stream.label_id(new[i % len(new)].label) for i in range(rows)],
    })  # fmt: skip
    data = embed_dataset(data, load_encoder())
    data = data.map(lambda b: tokenizer(b["text"], truncation=True, max_length=64), batched=True)
    memory_texts = [e.text for t in stream.tasks if t.name != "verbs" for e in t.train]
    keys = KeyRing.from_bytes(bytes(32)) if args.dir else KeyRing.generate()  # a benchmark-only key
    results: dict[str, object] = {
        "batch": args.batch, "replay": args.replay, "steps": args.steps, "rounds": args.rounds
    }  # fmt: skip

    with tempfile.TemporaryDirectory(dir=args.dir) as scratch:
        tmp = str(args.dir) if args.dir else scratch
        build: dict[int, float] = {}
        for n in args.sizes:
            build[n] = build_memory(Path(tmp) / f"m{n}", n, memory_texts, keys, n_labels)
            print(f"built memory of {n:,} entries in {build[n]:.0f} s", file=sys.stderr)
        plain = DataCollatorWithPadding(tokenizer)

        def plain_collate(features):  # type: ignore[no-untyped-def]
            return plain([{k: v for k, v in f.items() if k not in ("text", "embedding")} for f in features])

        ratio = args.replay / args.batch
        collators = {
            f"replay {n:,}": RehearsalCollator(
                Path(tmp) / f"m{n}", plain, tokenizer, ReplayConfig(ratio=ratio, mode="hybrid"), keys=keys
            )
            for n in args.sizes
        }
        runs: dict[str, tuple[object, int]] = {"plain": (plain_collate, args.batch)}
        runs.update({name: (c, args.batch - args.replay) for name, c in collators.items()})
        step_times: dict[str, list[float]] = {name: [] for name in runs}
        # A discarded warm-up run absorbs the cold start (page cache, allocator, thread pools). Then the
        # runs go round in rounds, the order rotated each round, so a change in the machine's load lands
        # on every run alike rather than on whichever ran during it.
        train(data, plain_collate, args.batch, args.steps, n_labels, tmp + "/o")
        names = list(runs)
        for round_ in range(args.rounds):
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                collate, rows = runs[name]
                step_times[name] += train(data, collate, rows, args.steps, n_labels, tmp + "/o")
        breakdown: dict[str, dict[str, float]] = {}
        for name, collator in collators.items():
            stats = collator.stats
            breakdown[name] = {
                "search_ms": 1000 * stats.search_seconds / stats.batches,
                "decrypt_ms": 1000 * stats.fetch_seconds / stats.batches,
                "tokenize_ms": 1000 * stats.tokenize_seconds / stats.batches,
                "replayed_per_batch": stats.replayed / stats.batches,
            }

    base = statistics.median(step_times["plain"])
    header = f"{'run':<18}{'median step s':>14}{'ratio':>8}{'search ms':>11}{'decrypt ms':>12}"
    print(f"\n{header}{'tokenize ms':>13}")
    rows_out = []
    for name, times in step_times.items():
        med = statistics.median(times)
        parts = breakdown.get(name, {})
        rows_out.append({"run": name, "median_step_s": med, "ratio": med / base, **parts})
        print(
            f"{name:<18}{med:>14.3f}{med / base:>8.3f}{parts.get('search_ms', 0):>11.1f}"
            f"{parts.get('decrypt_ms', 0):>12.1f}{parts.get('tokenize_ms', 0):>13.1f}"
        )
    results["runs"] = rows_out
    results["build_seconds"] = {str(k): v for k, v in build.items()}
    OUT.mkdir(exist_ok=True)
    (OUT / "overhead.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
