"""Replay overhead inside the HF Trainer: time per step with replay ÷ the plain Trainer, same effective batch.

The plain run trains on batches of ``--batch`` new examples; each replay run trains on batches of
``batch - replay`` new examples topped up with ``replay`` examples from an encrypted memory of N entries
(so both see the same number of rows per step). Memories are filled with real WordNet glosses (cycled)
and seeded clustered synthetic vectors; queries are real MiniLM embeddings. Plain and replay steps
alternate within one training run per memory size, so both see the same load on this shared machine,
and are compared on the median iteration time (collation included). The collator's own timers give the
breakdown (search, decrypt, tokenize), after one warm-up call that opens the memory.

    python benchmarks/overhead.py --sizes 100000 1000000 --steps 12

``--server URL`` replays from a memory already on a server instead (a ``postgresql://`` location built by
``benchmarks/servers.py --pg-url URL`` under its fixed benchmark-only key); ``--sizes`` is then ignored.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np
from _harness import provenance, write_record  # benchmarks/ is on sys.path when run as a script
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
from rehearsal.crypto.keys import KeyRing
from rehearsal.embedding import default_model_path, load_encoder
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.replay.collator import RehearsalCollator, embed_dataset
from rehearsal.runner.tasks import load_wordnet_stream

OUT = Path(__file__).parent / "out"


class Alternating:
    """Collates plain and replay batches turn about within one training run, so both kinds of step see
    the same load on this shared machine. A replay batch keeps ``new_rows`` of the 32 rows and tops them up
    with replay; a plain batch trains on all of them: the same number of rows per step either way."""

    def __init__(self, plain: Any, replay: RehearsalCollator, new_rows: int) -> None:
        self.plain, self.replay, self.new_rows = plain, replay, new_rows
        self.kinds: list[str] = []

    def __call__(self, features: list[dict[str, Any]]) -> Any:
        kind = "replay" if len(self.kinds) % 2 else "plain"
        self.kinds.append(kind)
        return self.replay(features[: self.new_rows]) if kind == "replay" else self.plain(features)


class StepTimer(TrainerCallback):
    """Wall time between consecutive step ends: the whole iteration, batch collation (where replay
    happens) included, labelled with the kind of the one collation that happened during it."""

    def __init__(self, kinds: list[str]) -> None:
        self.kinds = kinds
        self.samples: list[tuple[float, str]] = []
        self._last: float | None = None
        self._calls = 0

    def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        now = time.perf_counter()
        calls = self.kinds[self._calls :]
        if self._last is not None and len(calls) == 1:
            self.samples.append((now - self._last, calls[0]))
        self._last, self._calls = now, len(self.kinds)

    def by_kind(self) -> tuple[list[float], list[float]]:
        samples = self.samples[2:]  # warm-up
        return [t for t, k in samples if k == "plain"], [t for t, k in samples if k == "replay"]


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


def train(data: Dataset, collator: Any, batch: int, steps: int, n_labels: int, workdir: str,
          timer: TrainerCallback) -> None:  # fmt: skip
    model = AutoModelForSequenceClassification.from_pretrained(str(default_model_path()), num_labels=n_labels)
    args = TrainingArguments(
        output_dir=workdir, per_device_train_batch_size=batch, max_steps=steps, remove_unused_columns=False,
        report_to=[], use_cpu=True, save_strategy="no", logging_strategy="no", disable_tqdm=True, seed=0,
        dataloader_drop_last=True,
    )  # fmt: skip
    Trainer(model=model, args=args, train_dataset=data, data_collator=collator, callbacks=[timer]).train()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--steps", type=int, default=12, help="steps of each kind per memory size")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--replay", type=int, default=8)
    parser.add_argument("--dir", type=Path, help="keep the memories here (and reuse them on a rerun)")
    parser.add_argument("--server", help="replay from this server memory (built by servers.py --pg-url)")
    parser.add_argument("--out", type=Path, default=OUT / "overhead.json")
    args = parser.parse_args(argv)
    record = provenance()  # commit, command, machine, load at start
    hf_logging.set_verbosity_error()

    stream = load_wordnet_stream()
    n_labels = len(stream.labels)
    tokenizer = AutoTokenizer.from_pretrained(str(default_model_path()))
    new = stream.task("verbs").train
    rows = 2 * args.steps * args.batch
    data = Dataset.from_dict({
        "text": [new[i % len(new)].text for i in range(rows)],
        "label": [stream.label_id(new[i % len(new)].label) for i in range(rows)],
    })  # fmt: skip
    data = embed_dataset(data, load_encoder())
    data = data.map(lambda b: tokenizer(b["text"], truncation=True, max_length=64), batched=True)
    memory_texts = [e.text for t in stream.tasks if t.name != "verbs" for e in t.train]
    # a benchmark-only key (servers.py --pg-url builds under the same one)
    keys = KeyRing.from_bytes(bytes(32)) if args.dir or args.server else KeyRing.generate()
    results: dict[str, object] = {
        "batch": args.batch, "replay": args.replay, "steps": args.steps
    }  # fmt: skip

    with tempfile.TemporaryDirectory(dir=args.dir) as scratch:
        tmp = str(args.dir) if args.dir else scratch
        build: dict[int, float] = {}
        locations: dict[int, Any] = {}
        if args.server:
            with RehearsalMemory.open(args.server, keys=keys, read_only=True) as existing:
                n = len(existing)
            locations[n], build[n] = args.server, 0.0
            results["server"] = "postgresql"
            print(f"replaying from the server memory of {n:,} entries", file=sys.stderr)
        for n in () if args.server else args.sizes:
            locations[n] = Path(tmp) / f"m{n}"
            build[n] = build_memory(locations[n], n, memory_texts, keys, n_labels)
            print(f"built memory of {n:,} entries in {build[n]:.0f} s", file=sys.stderr)
        plain = DataCollatorWithPadding(tokenizer)

        def plain_collate(features):  # type: ignore[no-untyped-def]
            return plain([{k: v for k, v in f.items() if k not in ("text", "embedding")} for f in features])

        ratio = args.replay / args.batch
        step_times: dict[str, list[float]] = {"plain": []}
        breakdown: dict[str, dict[str, float]] = {}
        for n, location in locations.items():
            started = time.perf_counter()
            collator = RehearsalCollator(
                location, plain, tokenizer, ReplayConfig(ratio=ratio, mode="hybrid"), keys=keys
            )
            collator([data[i] for i in range(args.batch - args.replay)])  # open the memory, warm caches
            print(f"opened + first replay batch in {time.perf_counter() - started:.1f} s", file=sys.stderr)
            collator.pop_stats()
            alternating = Alternating(plain_collate, collator, args.batch - args.replay)
            timer = StepTimer(alternating.kinds)
            train(data, alternating, args.batch, 2 * args.steps, n_labels, tmp + "/o", timer)
            plain_times, replay_times = timer.by_kind()
            step_times["plain"] += plain_times
            step_times[f"replay {n:,}"] = replay_times
            stats = collator.stats
            breakdown[f"replay {n:,}"] = {
                "search_ms": 1000 * stats.search_seconds / stats.batches,
                "decrypt_ms": 1000 * stats.fetch_seconds / stats.batches,
                "tokenize_ms": 1000 * stats.tokenize_seconds / stats.batches,
                "replayed_per_batch": stats.replayed / stats.batches,
                "plain_median_same_run_s": statistics.median(plain_times),
                "ratio_same_run": statistics.median(replay_times) / statistics.median(plain_times),
            }

    base = statistics.median(step_times["plain"])
    header = f"{'run':<18}{'median step s':>14}{'ratio':>8}{'search ms':>11}{'decrypt ms':>12}"
    print(f"\n{header}{'tokenize ms':>13}")
    rows_out = []
    for name, times in step_times.items():
        med = statistics.median(times)
        parts = breakdown.get(name, {})
        # Replay rows are compared with the plain steps of their own run (same load), not the pooled ones.
        ratio = parts.get("ratio_same_run", med / base)
        rows_out.append({"run": name, "median_step_s": med, "ratio": ratio, **parts})
        print(
            f"{name:<18}{med:>14.3f}{ratio:>8.3f}{parts.get('search_ms', 0):>11.1f}"
            f"{parts.get('decrypt_ms', 0):>12.1f}{parts.get('tokenize_ms', 0):>13.1f}"
        )
    results["runs"] = rows_out
    results["build_seconds"] = {str(k): v for k, v in build.items()}
    print(f"wrote {write_record(args.out, results, record)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
