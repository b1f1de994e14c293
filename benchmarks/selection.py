"""Replay selection in the sparse regime: a large memory, a small replay budget, methods paired by seed.

Every train example of the chosen stream is used; the memory keeps every past example; each step adds
``--replay`` old examples to ``--batch-size`` new ones (at most a quarter of the batch) for one epoch per
task, so each task replays only a fraction of the memory it may draw from (printed, and saved as
``budget``). Every replay method gets the same replay count and the same optimizer steps; multitask is
trained on the union with as many example passes and as many steps as a replay run (the bound).

    .venv/bin/python benchmarks/selection.py --stream wordnet --methods random multitask --seeds 0 1 2 3 4
    .venv/bin/python benchmarks/selection.py --stream sentiment --methods random mir --seeds 0 1 2 3 4
    .venv/bin/python benchmarks/selection.py --data my_stream.jsonl --methods random hybrid --seeds 0 1

``--summary-only`` trains nothing and summarises the finished runs (lanes run as separate processes on
different seeds write their runs side by side; this joins them).

Methods are ``rehearsal run`` methods (``naive``, ``multitask``, ``random``, ``retrieval``, ``hybrid`` and
whatever replay modes the library registers); ``METHOD:separated`` trains a replay method with the
separated softmax instead of cross-entropy (runs under ``METHOD-separated_s<seed>``); ``mir-head`` is MIR
whose virtual step moves the classification head only (``replay.mir_scope = "head"``), and
``random-reference`` is random replay on the reference training and evaluation paths (one forward pass
per batch, evaluation in the given order: issue 30's baseline; with the optimizer of today, so the
baseline commit's own checkout is the truer reference), ``random-bf16`` random replay with bf16 in
training, evaluation and the memory's encoder. Runs go seed by seed
and a finished run is reused when its saved config is the one asked for, so the script can be stopped and
restarted. Writes
benchmarks/out/selection/<stream>/<method>_s<seed>/ and summary.json / summary.md there (``--results`` also
copies the summary, e.g. to benchmarks/results/); the summary holds each method's mean ± sd and the
difference to random replay paired by seed, with its 95% t-interval.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from _harness import provenance
from _paired import describe, paired_difference
from continual import _complete, _just_trained  # also sets the offline flags and a master key

from rehearsal.config import LOSSES, ReplayConfig
from rehearsal.methods.calibration import CALIBRATIONS
from rehearsal.runner.config import RunConfig
from rehearsal.runner.loop import run
from rehearsal.runner.sentiment import load_sentiment_stream
from rehearsal.runner.strategies import get_strategy
from rehearsal.runner.tasks import TaskStream, load_jsonl_stream, load_wordnet_stream

BASELINE = "random"


def load(args: argparse.Namespace) -> TaskStream:
    if args.data is not None:
        return load_jsonl_stream(args.data, seed=0)
    loader = load_wordnet_stream if args.stream == "wordnet" else load_sentiment_stream
    return loader(max_test_per_class=args.test_per_class)


def budget(stream: TaskStream, batch: int, replay: int) -> dict[str, Any]:
    """Steps, replay count and replayed share of the eligible memory, phase by phase (one epoch each)."""
    sizes = [len(task.train) for task in stream.tasks]
    steps = [math.ceil(n / batch) for n in sizes]
    memory = [sum(sizes[:t]) for t in range(len(sizes))]
    replayed = [0 if memory[t] == 0 else steps[t] * replay for t in range(len(sizes))]
    return {
        "train_per_task": sizes,
        "steps_per_task": steps,
        "memory_per_task": memory,
        "replayed_per_task": replayed,
        "replayed_share_of_memory": [r / m if m else None for r, m in zip(replayed, memory, strict=True)],
        "steps": sum(steps),
        "example_passes": sum(sizes) + sum(replayed),
    }


# Benchmark names for a method with settings of its own: name -> (method, ReplayConfig fields, RunConfig
# fields).
SCOPED: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "mir-head": ("mir", {"mir_scope": "head"}, {}),
    "random-reference": ("random", {}, {"length_buckets": 1, "length_sorted_eval": False}),
    "random-bf16": ("random", {}, {"bf16_training": True, "bf16_eval": True, "encoder_backend": "bf16"}),
}


def parse_method(spec: str) -> tuple[str, str]:
    """``"random"`` -> (random, ce); ``"random:separated"`` -> (random, separated): a replay method
    with another loss, compared like any other method (its runs go to ``random-separated_s<seed>``)."""
    method, _, loss = spec.partition(":")
    method = SCOPED.get(method, (method, {}, {}))[0]
    loss = loss or "ce"
    if loss not in LOSSES:
        raise SystemExit(f"{spec!r}: the loss after ':' must be one of {sorted(LOSSES)}")
    if loss != "ce" and method in ("multitask", "naive"):
        raise SystemExit(f"{spec!r}: only a replay method takes another loss")
    return method, loss


def run_name(spec: str) -> str:
    name, _, loss = spec.partition(":")
    return name if loss in ("", "ce") else f"{name}-{loss}"


def config_for(spec: str, seed: int, args: argparse.Namespace, plan: dict[str, Any]) -> RunConfig:
    method, loss = parse_method(spec)
    common: dict[str, Any] = {
        "method": method,
        "data": None if args.data is None else str(args.data),
        "max_train_per_class": None,
        "max_test_per_class": args.test_per_class,
        "learning_rate": args.lr,
        "head_learning_rate": args.head_lr,
        "max_length": args.max_length,
        "seed": seed,
        "policy": "keep_all",
        "progress": False,
        "output_dir": str(args.out / f"{run_name(spec)}_s{seed}"),
    }
    if method == "multitask":
        # One phase over the union with the replay runs' example passes and steps: a larger batch, more
        # than one epoch. Plain cross-entropy, nothing to calibrate (every class is trained at once).
        n = sum(plan["train_per_task"])
        batch = max(1, round(plan["example_passes"] / plan["steps"]))
        epochs = plan["example_passes"] / n
        return RunConfig(
            **common, loss="ce", mask_unseen=False, calibration="none", epochs=epochs, batch_size=batch
        )
    _, scoped, run_changes = SCOPED.get(spec.partition(":")[0], (method, {}, {}))
    replay = ReplayConfig(ratio=args.replay / (args.batch_size + args.replay), balance="class", **scoped)
    if replay.replay_count(args.batch_size) != args.replay:
        raise SystemExit(f"--replay {args.replay} with --batch-size {args.batch_size} does not round-trip")
    calibration = "none" if method == "naive" else args.calibration
    return RunConfig(
        **common,
        **run_changes,
        loss=loss,
        mask_unseen=True,
        calibration=calibration,
        epochs=1.0,
        batch_size=args.batch_size,
        replay=replay,
    )


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    base = {r["config"]["seed"]: r for r in runs.get(BASELINE, [])}
    for method, results in runs.items():
        row: dict[str, Any] = {"seeds": [r["config"]["seed"] for r in results]}
        for key in ("average_accuracy", "forgetting", "backward_transfer"):
            values = [r["summary"][key] for r in results if r["summary"][key] is not None]
            row[key] = describe(values) if values else None
        diagonals = [_just_trained(r) for r in results]
        row["just_trained"] = (
            describe([d for d in diagonals if d is not None]) if None not in diagonals else None
        )
        row["wall_seconds"] = describe([float(r["cost"]["wall_seconds"]) for r in results])
        cpu = [float(r["cost"]["cpu_seconds"]) for r in results if "cpu_seconds" in r["cost"]]
        row["cpu_seconds"] = describe(cpu) if cpu else None  # measured when this invocation trained it
        row["replayed_examples"] = sorted({int(r["cost"]["replayed_examples"]) for r in results})
        paired = [r for r in results if r["config"]["seed"] in base]
        if method != BASELINE and len(paired) >= 1:
            row["vs_random"] = {"seeds": [r["config"]["seed"] for r in paired]}
            for key in ("average_accuracy", "forgetting"):
                mine = [r["summary"][key] for r in paired]
                theirs = [base[r["config"]["seed"]]["summary"][key] for r in paired]
                if None not in mine and None not in theirs:
                    row["vs_random"][key] = paired_difference(mine, theirs)
        table[method] = row
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
        "| method | seeds | ACC | forgetting | just trained | ΔACC vs random, points [95% CI] | "
        "replayed | wall s |",
        "|---" * 8 + "|",
    ]
    for method, row in table.items():
        vs = row.get("vs_random", {})
        lines.append(
            f"| {method} | {len(row['seeds'])} | {cell(row['average_accuracy'])} | "
            f"{cell(row['forgetting'])} | "
            f"{cell(row['just_trained'])} | {diff(vs.get('average_accuracy'))} | "
            f"{'/'.join(str(x) for x in row['replayed_examples'])} | {cell(row['wall_seconds'], 0)} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stream", choices=["wordnet", "sentiment"], default="wordnet")
    parser.add_argument("--data", type=Path, default=None, help="a JSON-lines stream instead (see README)")
    parser.add_argument("--methods", nargs="+", default=[BASELINE, "multitask"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--batch-size", type=int, default=24, help="new examples per step")
    parser.add_argument("--replay", type=int, default=4, help="replayed examples per step (<= batch / 3)")
    parser.add_argument("--test-per-class", type=int, default=None, help="cap on test examples per class")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--head-lr", type=float, default=3e-3)
    parser.add_argument("--max-length", type=int, default=None, help="tokens (default: 32 wordnet, 48 else)")
    parser.add_argument("--calibration", choices=list(CALIBRATIONS), default="weight_aligning")
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/out/selection/<stream>")
    parser.add_argument("--results", type=Path, default=None, help="also copy the summary JSON here")
    parser.add_argument(
        "--summary-only",
        action="store_true",
        help="train nothing: summarise the finished runs of these methods and seeds (after parallel lanes)",
    )
    args = parser.parse_args(argv)
    if 4 * args.replay > args.batch_size + args.replay:
        parser.error("the sparse regime replays at most a quarter of each batch: --replay <= batch-size / 3")
    name = "custom" if args.data is not None else args.stream
    args.max_length = args.max_length or (32 if name == "wordnet" else 48)
    args.out = args.out or Path("benchmarks/out/selection") / name
    args.out.mkdir(parents=True, exist_ok=True)
    for spec in args.methods:
        get_strategy(parse_method(spec)[0])  # an unknown method fails here, before any run starts

    stream = load(args)
    plan = budget(stream, args.batch_size, args.replay)
    shares = ", ".join("—" if s is None else f"{s:.0%}" for s in plan["replayed_share_of_memory"])
    print(f"{name}: train per task {plan['train_per_task']}, replayed share of the memory {shares}")
    settings = {k: str(v) for k, v in vars(args).items()}
    record = provenance(seeds=args.seeds, methods=args.methods)  # commit, command, machine, load at start
    runs: dict[str, list[dict[str, Any]]] = {run_name(m): [] for m in args.methods}
    for seed in args.seeds:
        for spec in args.methods:
            method = run_name(spec)
            config = config_for(spec, seed, args, plan)
            done = Path(config.output_dir) / "results.json"
            result = json.loads(done.read_text()) if _complete(done, config) else None
            if result is None and args.summary_only:
                print(f"{method} seed={seed}: not run", flush=True)
                continue
            if result is None:
                cpu_started = time.process_time()  # this process's CPU seconds: steadier than wall
                result = run(config, resume=True, stream=stream).to_dict()
                result["cost"]["cpu_seconds"] = time.process_time() - cpu_started
            runs[method].append(result)
            s = result["summary"]
            print(
                f"{method} seed={seed} ACC={s['average_accuracy']:.3f} forgetting={s['forgetting']} "
                f"replayed={result['cost']['replayed_examples']} wall={result['cost']['wall_seconds']:.0f}s "
                f"cpu={result['cost'].get('cpu_seconds', float('nan')):.0f}s load={os.getloadavg()[0]:.1f}",
                flush=True,
            )
            table = summarize({m: r for m, r in runs.items() if r})
            summary = {
                **record,
                "load_1m_end": os.getloadavg()[0],
                "stream": name,
                "settings": settings,
                "budget": plan,
                "table": table,
            }
            (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
            (args.out / "summary.md").write_text(to_markdown(table))
            if args.results is not None:
                args.results.parent.mkdir(parents=True, exist_ok=True)
                args.results.write_text(json.dumps(summary, indent=2) + "\n")
    print(to_markdown(summarize({m: r for m, r in runs.items() if r})))
    return 0


if __name__ == "__main__":
    sys.exit(main())
