"""Online continual learning: each batch tested before it is trained on, anytime figures, paired by seed.

Every method sees the same capped stream once, in batches of ``--batch-size`` new examples, with the same
replay count per step (``--replay``, none for naive), at a constant learning rate with gradient clipping
(``rehearsal run`` with ``online = true``). Reported per method: average online accuracy, final ACC (the
last row of the task-boundary matrix), A_AUC, the stability gap's depth and the steps to recover (from
probes every ``--probe-every`` steps), and the probe evaluation's share of the run's wall time.

    .venv/bin/python benchmarks/online.py --stream wordnet --seeds 0 1 2
    .venv/bin/python benchmarks/online.py --stream sentiment --methods naive random retrieval --seeds 0 1 2
    .venv/bin/python benchmarks/online.py --stream wordnet --methods random+ncm random+lda --seeds 0 1 2 3 4

Runs go to benchmarks/out/online/<stream>/<method>_s<seed>/ (a finished one is reused); the table is
printed and written to benchmarks/results/online_<stream>.json with the commit, command and load.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from _harness import provenance, write_results
from _paired import describe, paired_difference
from _runs import finished

from rehearsal.config import ReplayConfig
from rehearsal.crypto.keys import KeyRing
from rehearsal.runner.config import RunConfig
from rehearsal.runner.loop import run
from rehearsal.runner.online_config import OnlineConfig
from rehearsal.runner.sentiment import load_sentiment_stream
from rehearsal.runner.tasks import TaskStream, load_wordnet_stream

BASELINE = "random"
OUT = Path(__file__).resolve().parent / "out" / "online"
# (train, test) examples per class and task: WordNet has 45 classes, sentiment 4 domains x 3 labels.
CAPS = {"wordnet": (12, 4), "sentiment": (20, 10)}


def load(stream: str) -> TaskStream:
    train, test = CAPS[stream]
    loader = load_wordnet_stream if stream == "wordnet" else load_sentiment_stream
    return loader(max_train_per_class=train, max_test_per_class=test)


def config_for(method: str, seed: int, args: argparse.Namespace) -> RunConfig:
    """``method`` is a run method, or ``<method>+<predictor>`` for one predicting through the memory."""
    replay = ReplayConfig(ratio=args.replay / (args.batch_size + args.replay), balance="class")
    train, test = CAPS[args.stream]
    base, _, predictor = method.partition("+")
    return RunConfig(
        method=base,
        prediction=predictor or "head",
        online=True,
        streaming=OnlineConfig(
            batch_size=args.batch_size,
            probe_every=args.probe_every,
            probe_per_class=args.probe_per_class,
            clip_norm=1.0,
            checkpoint_every=1000,  # a run is short: checkpoint at its end only
            refit_every=args.refit_every,
        ),
        replay=replay,
        max_train_per_class=train,
        max_test_per_class=test,
        learning_rate=args.lr,
        head_learning_rate=args.head_lr,
        max_length=args.max_length,
        seed=seed,
        progress=False,
        output_dir=str(args.out / f"{method}_s{seed}"),
    )


def _one(result: dict[str, Any]) -> dict[str, Any]:
    """The figures of one run."""
    online = result["online"]
    gaps = online["stability_gaps"]
    recovered = [g["recovered_after"] for g in gaps if g["depth"] > 0]
    return {
        "online_accuracy": online["online_accuracy"],
        "final_acc": result["summary"]["average_accuracy"],
        "anytime_auc": online["anytime_auc"],
        "gap_depth": online["mean_gap_depth"],
        "gap_min_after": sum(g["min_after"] for g in gaps) / len(gaps) if gaps else None,
        "recovered_share": sum(r is not None for r in recovered) / len(recovered) if recovered else None,
        "recovery_steps": (
            sum(r for r in recovered if r is not None) / max(1, sum(r is not None for r in recovered))
            if any(r is not None for r in recovered)
            else None
        ),
        "probe_share": online["probe_share"],
        "wall_seconds": result["cost"]["wall_seconds"],
        "steps": online["trace"]["steps"][-1],
    }


METRICS = ("online_accuracy", "final_acc", "anytime_auc", "gap_depth", "gap_min_after", "recovery_steps")


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    base = {r["seed"]: r for r in runs.get(BASELINE, [])}
    table: dict[str, Any] = {}
    for method, rows in runs.items():
        entry: dict[str, Any] = {"seeds": [r["seed"] for r in rows]}
        for key in (*METRICS, "recovered_share", "probe_share", "wall_seconds"):
            values = [r[key] for r in rows if r[key] is not None]
            entry[key] = describe(values) if values else None
        paired = [r for r in rows if r["seed"] in base]
        if method != BASELINE and paired:
            entry["vs_random"] = {
                key: paired_difference([r[key] for r in paired], [base[r["seed"]][key] for r in paired])
                for key in ("online_accuracy", "final_acc", "anytime_auc", "gap_depth")
                if all(r[key] is not None and base[r["seed"]][key] is not None for r in paired)
            }
        table[method] = entry
    return table


def to_markdown(table: dict[str, Any]) -> str:
    def cell(stat: dict[str, Any] | None, digits: int = 3) -> str:
        return "—" if stat is None else f"{stat['mean']:.{digits}f} ± {stat['sd']:.{digits}f}"

    def diff(stat: dict[str, Any] | None) -> str:
        if stat is None:
            return "—"
        if stat["ci_low"] is None:
            return f"{100 * stat['mean']:+.1f}"
        return f"{100 * stat['mean']:+.1f} [{100 * stat['ci_low']:+.1f}, {100 * stat['ci_high']:+.1f}]"

    lines = [
        "| method | seeds | online acc | final ACC | A_AUC | gap depth | min at step | recover steps "
        "| recovered | probe share | Δonline vs random [95% CI] | ΔACC vs random | wall s |",
        "|---" * 13 + "|",
    ]
    for method, row in table.items():
        vs = row.get("vs_random", {})
        lines.append(
            f"| {method} | {len(row['seeds'])} | {cell(row['online_accuracy'])} | {cell(row['final_acc'])} | "
            f"{cell(row['anytime_auc'])} | {cell(row['gap_depth'])} | {cell(row['gap_min_after'], 1)} | "
            f"{cell(row['recovery_steps'], 1)} | {cell(row['recovered_share'], 2)} | "
            f"{cell(row['probe_share'])} | {diff(vs.get('online_accuracy'))} | {diff(vs.get('final_acc'))} | "
            f"{cell(row['wall_seconds'], 0)} |"
        )
    return "\n".join(lines) + "\n"


def _portable(value: object, root: Path) -> str:
    """A setting as text; a path inside the repository relative to it."""
    if isinstance(value, Path) and value.resolve().is_relative_to(root):
        return str(value.resolve().relative_to(root))
    return str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stream", choices=sorted(CAPS), default="wordnet")
    parser.add_argument("--methods", nargs="+", default=["naive", BASELINE, "retrieval"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--batch-size", type=int, default=8, help="new examples per step")
    parser.add_argument("--replay", type=int, default=8, help="replayed examples per step")
    parser.add_argument("--probe-every", type=int, default=OnlineConfig().probe_every)
    parser.add_argument("--probe-per-class", type=int, default=OnlineConfig().probe_per_class)
    parser.add_argument("--refit-every", type=int, default=10, help="steps between a predictor's refits")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--head-lr", type=float, default=3e-3)
    parser.add_argument("--max-length", type=int, default=32)
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/out/online/<stream>")
    parser.add_argument("--summary-only", action="store_true", help="train nothing; summarise finished runs")
    args = parser.parse_args(argv)
    args.out = args.out or OUT / args.stream
    record = provenance(seeds=args.seeds, methods=args.methods, caps=CAPS[args.stream])
    stream = load(args.stream)
    keys = KeyRing.generate()  # the runs' memories are scratch: a key for this process only
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in args.methods}  # methods without a run: empty
    for seed in args.seeds:
        for method in args.methods:
            config = config_for(method, seed, args)
            folder = Path(config.output_dir)
            if finished(folder) and (folder / "results.json").is_file():
                result = json.loads((folder / "results.json").read_text())
            elif args.summary_only:
                continue
            else:
                result = run(config, stream=stream, keys=keys, resume=folder.exists()).to_dict()
            runs[method].append({"seed": seed, **_one(result)})
            print(f"{method} s{seed}: {runs[method][-1]}", file=sys.stderr, flush=True)
    table = summarize({m: rows for m, rows in runs.items() if rows})
    markdown = to_markdown(table)
    print(markdown)
    # Paths relative to the repository: a results file names no folder of the machine that wrote it.
    root = Path(__file__).resolve().parent.parent
    settings = {k: _portable(v, root) for k, v in vars(args).items()}
    write_results(
        f"online_{args.stream}", {"table": table, "markdown": markdown, "settings": settings}, record
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
