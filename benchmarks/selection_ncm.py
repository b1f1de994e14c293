"""Nearest-class-mean read-out of finished selection runs, paired with their own head's read-out.

``prediction = "ncm"`` changes only how a run predicts, not how it trains: after each phase it takes class
means of the encoder's features over ``CLASS_MEAN_PER_CLASS`` memory entries per seen class, and predicts
the nearest. So it can be read out of a finished run's saved weights (``weights/phase_<p>``) and memory
with the strategy's own draw (``memory_sample`` with ``class_mean_seed``), giving exactly what a run with
``prediction = "ncm"`` would have scored, at a tenth of a run's cost — and paired with the head's
read-out of the very same weights, which isolates the head's bias from the encoder's forgetting.

    REHEARSAL_MASTER_KEY=$(cat benchmarks/out/selection/bench.key) \\
    .venv/bin/python benchmarks/selection_ncm.py --stream wordnet --methods random --seeds 0 1 2 3 4 \\
        --results benchmarks/results/selection_wordnet_ncm.json

Reads ``benchmarks/out/selection/<stream>/<method>_s<seed>/`` (written by ``benchmarks/selection.py``, whose
master key it needs); a run whose phases are not all finished is skipped and named.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

# Checked before anything imports ``continual``, which would make up a key of its own: a read-out needs the
# key the runs were made with.
_KEY_GIVEN = bool(os.environ.get("REHEARSAL_MASTER_KEY"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from _paired import describe, paired_difference  # noqa: E402
from _runs import finished  # noqa: E402

from rehearsal.crypto.master_key import resolve_master_key  # noqa: E402
from rehearsal.memory.facade import RehearsalMemory  # noqa: E402
from rehearsal.methods.ncm import NearestClassMean, head_features  # noqa: E402
from rehearsal.runner.config import RunConfig  # noqa: E402
from rehearsal.runner.metrics import AccuracyMatrix  # noqa: E402
from rehearsal.runner.results import summarize  # noqa: E402
from rehearsal.runner.sentiment import load_sentiment_stream  # noqa: E402
from rehearsal.runner.strategies.base import model_path  # noqa: E402
from rehearsal.runner.strategies.replay import CLASS_MEAN_PER_CLASS, class_mean_seed, memory_sample  # noqa: E402
from rehearsal.runner.tasks import TaskStream, load_wordnet_stream  # noqa: E402


def ncm_matrix(folder: Path, stream: TaskStream, config: RunConfig, keys: Any) -> AccuracyMatrix:
    """The accuracy matrix ``folder``'s run would have recorded with ``prediction = "ncm"``."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path(config))
    matrix = AccuracyMatrix([task.name for task in stream.tasks])
    with RehearsalMemory.open(folder / "memory", keys=keys, read_only=True) as memory:
        for phase, task in enumerate(stream.tasks):
            model = AutoModelForSequenceClassification.from_pretrained(folder / "weights" / f"phase_{phase}")
            model.eval()
            seen = sorted({stream.label_id(ex.label) for t in stream.tasks[: phase + 1] for ex in t.train})
            # The memory now holds every phase; the seen classes' members are what it held after this one
            # (keep_all never drops an entry), so the draw is the one the run made.
            texts, labels = memory_sample(
                memory, seen, CLASS_MEAN_PER_CLASS, seed=class_mean_seed(config.seed, phase)
            )

            means = NearestClassMean.fit(_features(model, tokenizer, texts, config), labels)
            # Every task, as the run evaluates them (a later task's row feeds forward transfer).
            for evaluated in stream.tasks:
                predicted = means.predict(
                    _features(model, tokenizer, [ex.text for ex in evaluated.test], config)
                )
                truth = [stream.label_id(ex.label) for ex in evaluated.test]
                matrix.record(task.name, evaluated.name, float((predicted == truth).mean()))
            so_far = matrix.average_accuracy(phase)
            print(f"  {folder.name} phase {phase} ({task.name}): ACC so far {so_far:.3f}", flush=True)
    return matrix


def _features(model: Any, tokenizer: Any, texts: list[str], config: RunConfig) -> Any:
    return head_features(
        model, tokenizer, texts, batch_size=config.eval_batch_size, max_length=config.max_length
    )


READOUT_FILE = "ncm_readout.json"


def read_out(folder: Path, stream_name: str, keys: Any) -> dict[str, Any]:
    """The run's head summary and its NCM read-out; kept in ``folder/ncm_readout.json`` and reused while
    the run's results and the class-mean draw size are unchanged (a read-out costs about a run's
    evaluation)."""
    result = json.loads((folder / "results.json").read_text())
    cached = folder / READOUT_FILE
    if cached.is_file():
        entry: dict[str, Any] = json.loads(cached.read_text())
        if entry.get("config") == result["config"] and entry.get("per_class") == CLASS_MEAN_PER_CLASS:
            return entry
    config = RunConfig.from_dict(result["config"])
    loader = load_wordnet_stream if stream_name == "wordnet" else load_sentiment_stream
    stream = loader(max_test_per_class=config.max_test_per_class)
    matrix = ncm_matrix(folder, stream, config, keys)
    ncm = summarize(matrix)
    entry = {
        "config": result["config"],
        "per_class": CLASS_MEAN_PER_CLASS,
        "head": result["summary"],
        "ncm": {k: ncm[k] for k in ("average_accuracy", "forgetting", "backward_transfer")},
        "ncm_matrix": [[None if v != v else v for v in row] for row in matrix.matrix.tolist()],
    }
    cached.write_text(json.dumps(entry, indent=2) + "\n")
    return entry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stream", choices=["wordnet", "sentiment"], default="wordnet")
    parser.add_argument("--methods", nargs="+", default=["random"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/out/selection/<stream>")
    parser.add_argument("--results", type=Path, default=None, help="also copy the summary JSON here")
    args = parser.parse_args(argv)
    out = args.out or Path("benchmarks/out/selection") / args.stream
    keys = resolve_master_key() if _KEY_GIVEN else None
    if keys is None:
        parser.error(
            "the runs' memories are encrypted: set REHEARSAL_MASTER_KEY to the key they were made with"
        )
    rows: dict[str, Any] = {}
    for method in args.methods:
        runs: list[dict[str, Any]] = []
        for seed in args.seeds:
            folder = out / f"{method}_s{seed}"
            if not finished(folder):
                print(f"{method} seed={seed}: not finished, skipped")
                continue
            entry = read_out(folder, args.stream, keys)
            runs.append({"seed": seed, **{k: v for k, v in entry.items() if k != "config"}})
            print(
                f"{method} seed={seed}: ACC head {entry['head']['average_accuracy']:.3f}, "
                f"ncm {entry['ncm']['average_accuracy']:.3f}"
            )
        if not runs:
            continue
        head = [r["head"]["average_accuracy"] for r in runs]
        ncm_acc = [r["ncm"]["average_accuracy"] for r in runs]
        rows[method] = {
            "seeds": [r["seed"] for r in runs],
            "head_acc": describe(head),
            "ncm_acc": describe(ncm_acc),
            "ncm_minus_head": paired_difference(ncm_acc, head),
            "ncm_forgetting": describe([r["ncm"]["forgetting"] for r in runs]),
            "runs": runs,
        }
    lines = [
        "| method | seeds | ACC, head | ACC, NCM | NCM − head, points [95% CI] | NCM forgetting |",
        "|---" * 6 + "|",
    ]
    for method, row in rows.items():
        d = row["ncm_minus_head"]
        interval = "" if d["ci_low"] is None else f" [{100 * d['ci_low']:+.1f}, {100 * d['ci_high']:+.1f}]"
        head, ncm = row["head_acc"], row["ncm_acc"]
        lines.append(
            f"| {method} | {len(row['seeds'])} | {head['mean']:.3f} ± {head['sd']:.3f} | "
            f"{ncm['mean']:.3f} ± {ncm['sd']:.3f} | {100 * d['mean']:+.1f}{interval} | "
            f"{row['ncm_forgetting']['mean']:.3f} |"
        )
    table = "\n".join(lines) + "\n"
    print(table)
    summary = {"stream": args.stream, "per_class": CLASS_MEAN_PER_CLASS, "table": rows}
    (out / "summary_ncm.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary_ncm.md").write_text(table)
    if args.results is not None:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
