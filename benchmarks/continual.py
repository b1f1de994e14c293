"""Continual-learning benchmark: class-incremental WordNet stream (5 tasks, 45 classes), MiniLM, one head.

Every replay method gets the same budget (``--ratio`` of each batch, memory = all past training data).
Runs go seed by seed, so a stopped benchmark still holds complete seeds; each finished run is skipped
on a rerun (its results.json is read back), and the summary is rewritten after every run.

    .venv/bin/python benchmarks/continual.py --seeds 0 1 2                     # the main grid
    .venv/bin/python benchmarks/continual.py --variants hybrid-asym hybrid-nocal --seeds 0   # ablations

A finished run is reused only if its saved config is exactly the one asked for.
"'just trained'" is the mean accuracy on each task right after its own phase (plasticity).

Writes benchmarks/out/continual/<variant>_s<seed>/ (each run's outputs) and summary.json / summary.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
if not os.environ.get("REHEARSAL_MASTER_KEY"):
    # The runs' memories are encrypted; a key for this process only (set REHEARSAL_MASTER_KEY to resume
    # a run that was cut short in an earlier invocation).
    from rehearsal.crypto.keys import KeyRing

    os.environ["REHEARSAL_MASTER_KEY"] = KeyRing.generate().export_base64()

from rehearsal.config import CALIBRATIONS, EWCConfig, LoRAConfig, ReplayConfig
from rehearsal.runner.config import RunConfig
from rehearsal.runner.loop import run

# variant -> RunConfig changes on top of the command line's settings (--loss, --mask-unseen, --calibration,
# --head-lr, --ratio, which every replay method shares). Naive fine-tuning gets the same loss without replay
# or calibration; multitask trains once on everything with plain cross-entropy, same epochs and rates.
VARIANTS: dict[str, dict[str, Any]] = {
    "naive": {"method": "naive", "calibration": "none"},
    "random": {"method": "random"},
    "retrieval": {"method": "retrieval"},
    "hybrid": {"method": "hybrid"},
    "multitask": {"method": "multitask", "loss": "ce", "mask_unseen": False, "calibration": "none"},
    # Multitask with as many example-gradient passes as a replay run (2x the epochs at ratio 0.5).
    "multitask-2x": {
        "method": "multitask",
        "loss": "ce",
        "mask_unseen": False,
        "calibration": "none",
        "epochs_factor": 2.0,
    },
    "hybrid-2x": {"method": "hybrid", "epochs_factor": 2.0},
    "random-2x": {"method": "random", "epochs_factor": 2.0},
    "hybrid-asym": {"method": "hybrid", "loss": "asymmetric", "mask_unseen": False, "calibration": "none"},
    "random-asym": {"method": "random", "loss": "asymmetric", "mask_unseen": False, "calibration": "none"},
    "hybrid-nocal": {"method": "hybrid", "calibration": "none"},
    "hybrid-bic": {"method": "hybrid", "calibration": "bias_correction"},
    "random-bic": {"method": "random", "calibration": "bias_correction"},
    "random-nocal": {"method": "random", "calibration": "none"},
    "hybrid-r25": {"method": "hybrid", "replay_ratio": 0.25},
    "random-r25": {"method": "random", "replay_ratio": 0.25},
    "hybrid-uniform": {"method": "hybrid", "balance": "uniform"},
    # EWC alone is naive fine-tuning plus the penalty (same loss, no calibration); EWC + replay is hybrid
    # plus the penalty. LoRA trains ~1% of the weights and gets its own learning rate (--lora-lr).
    "ewc": {"method": "ewc", "calibration": "none"},
    "ewc-replay": {"method": "ewc-replay"},
    "lora-routed": {"method": "lora-routed", "calibration": "none"},
    "lora-replay": {"method": "lora-replay"},
    # The same adapters routed by the memory's k-NN vote instead of the trained gate.
    "lora-routed-knn": {"method": "lora-routed", "calibration": "none", "lora_router": "knn"},
}
MAIN = ["naive", "random", "retrieval", "hybrid", "multitask"]
SUITE = ["ewc", "ewc-replay", "lora-routed", "lora-replay"]  # issue 6: regularisation and adapters


def config_for(variant: str, seed: int, args: argparse.Namespace) -> RunConfig:
    changes = dict(VARIANTS[variant])
    replay = {"ratio": changes.pop("replay_ratio", args.ratio), "balance": changes.pop("balance", "class")}
    ewc = {"lam": args.ewc_lambda}
    lora = {"router": changes.pop("lora_router", "gate"), "target_modules": args.lora_targets}
    epochs = args.epochs * changes.pop("epochs_factor", 1.0)
    learning_rate = args.lora_lr if str(changes["method"]).startswith("lora") else args.lr
    settings: dict[str, Any] = {
        "loss": args.loss,
        "mask_unseen": args.mask_unseen,
        "calibration": args.calibration,
        "head_learning_rate": args.head_lr,
        **changes,
    }
    return RunConfig(
        max_train_per_class=args.train_per_class,
        max_test_per_class=args.test_per_class,
        epochs=epochs,
        learning_rate=learning_rate,
        max_length=args.max_length,
        batch_size=args.batch_size,
        seed=seed,
        replay=ReplayConfig(**replay),
        ewc=EWCConfig(**ewc),
        lora=LoRAConfig(**lora),
        progress=False,
        output_dir=str(args.out / f"{variant}_s{seed}"),
        tasks=args.tasks,
        data=None if args.data is None else str(args.data),
        text_field=args.text_field,
        label_field=args.label_field,
        task_field=args.task_field,
        **settings,
    )


def _stats(values: list[float]) -> dict[str, float | int]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
    }


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for variant, results in runs.items():
        row: dict[str, Any] = {"seeds": [r["config"]["seed"] for r in results]}
        for key in ("average_accuracy", "forgetting", "backward_transfer"):
            values = [r["summary"][key] for r in results if r["summary"][key] is not None]
            row[key] = _stats(values) if values else None
        diagonals = [_just_trained(r) for r in results]
        complete = [d for d in diagonals if d is not None]
        row["just_trained"] = _stats(complete) if len(complete) == len(diagonals) else None
        for key in ("wall_seconds", "replayed_examples", "memory_bytes_on_disk"):
            row[key] = _stats([float(r["cost"][key]) for r in results])
        table[variant] = row
    return table


def _just_trained(result: dict[str, Any]) -> float | None:
    """Mean of R[i][i] (accuracy on task i right after training it); None when rows are missing."""
    matrix = result["accuracy"]["matrix"]
    diagonal = [matrix[i][i] for i in range(len(matrix))]
    return None if any(v is None for v in diagonal) else statistics.fmean(diagonal)


def to_markdown(table: dict[str, Any]) -> str:
    def cell(stat: dict[str, float] | None, digits: int = 3) -> str:
        return "—" if stat is None else f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"

    lines = [
        "| variant | seeds | ACC | forgetting | BWT | just trained | wall s | replayed | memory MB |",
        "|---" * 9 + "|",
    ]
    for variant, row in table.items():
        mem = row["memory_bytes_on_disk"]["mean"] / 1e6
        lines.append(
            f"| {variant} | {len(row['seeds'])} | {cell(row['average_accuracy'])} | "
            f"{cell(row['forgetting'])} | "
            f"{cell(row['backward_transfer'])} | {cell(row['just_trained'])} | "
            f"{cell(row['wall_seconds'], 0)} | "
            f"{row['replayed_examples']['mean']:.0f} | {mem:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=MAIN, choices=sorted(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--train-per-class", type=int, default=20)
    parser.add_argument("--test-per-class", type=int, default=10)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--max-length", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--loss", choices=["ce", "asymmetric"], default="ce")
    parser.add_argument("--mask-unseen", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--calibration", choices=list(CALIBRATIONS), default="weight_aligning")
    parser.add_argument("--head-lr", type=float, default=3e-3)
    parser.add_argument("--tasks", nargs="+", default=None)
    parser.add_argument("--data", type=Path, help="a JSON-lines task stream of your own (default: WordNet)")
    parser.add_argument("--text-field", default="text", help="--data: the field holding the text")
    parser.add_argument("--label-field", default="label", help="--data: the field holding the label")
    parser.add_argument("--task-field", default="task", help="--data: the field holding the task")
    parser.add_argument("--lora-lr", type=float, default=1e-3, help="learning rate of the lora* methods")
    parser.add_argument("--lora-targets", nargs="+", default=None, help="modules LoRA adapts (default: q, v)")
    parser.add_argument("--ewc-lambda", type=float, default=RunConfig().ewc.lam, help="EWC strength (ewc*)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/continual"))
    parser.add_argument("--summary-name", default="summary")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in args.variants}
    for seed in args.seeds:
        for variant in args.variants:
            config = config_for(variant, seed, args)
            done = Path(config.output_dir) / "results.json"
            result = json.loads(done.read_text()) if _complete(done, config) else None
            if result is None:
                result = run(config, resume=True).to_dict()
            runs[variant].append(result)
            s = result["summary"]
            print(
                f"{variant} seed={seed} ACC={s['average_accuracy']:.3f} forgetting={s['forgetting']} "
                f"wall={result['cost']['wall_seconds']:.0f}s",
                flush=True,
            )
            table = {v: r for v, r in summarize({k: x for k, x in runs.items() if x}).items()}
            settings = {k: str(v) for k, v in vars(args).items()}
            (args.out / f"{args.summary_name}.json").write_text(
                json.dumps({"settings": settings, "table": table}, indent=2)
            )
            (args.out / f"{args.summary_name}.md").write_text(to_markdown(table))
    print(to_markdown(summarize(runs)))
    return 0


def _complete(path: Path, config: RunConfig) -> bool:
    if not path.is_file():
        return False
    data = json.loads(path.read_text())
    # Compared as configs, so a run saved before a setting existed matches when that setting is default.
    if RunConfig.from_dict(data["config"]) != config:
        raise SystemExit(f"{path} holds a run of another config; use another --out")
    matrix = data["accuracy"]["matrix"]
    return all(v is not None for v in matrix[-1])


if __name__ == "__main__":
    sys.exit(main())
