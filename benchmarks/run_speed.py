"""A run's wall time and ACC with issue 30's fast paths against the reference paths, paired by seed.

The reference is the previous commit's computation, kept behind two switches: ``length_buckets=1`` (a
training batch is one forward pass, padded to its longest row) and ``length_sorted_eval=false``
(evaluation and predictor features in the given order). The fast side is today's default (two length
buckets per batch, length-sorted evaluation). Each (config, seed) runs both sides back to back as fresh
``rehearsal run`` processes on one thread, alternating which goes first, so a change in the machine's
load falls on both:

    .venv/bin/python benchmarks/run_speed.py --seeds 0 1 2 --shapes default

``--fast-set KEY=VALUE ...`` adds settings to the fast side (``--fast-set bf16_training=true``: bf16
training steps on top of today's defaults, against the same reference). ``--reference-set`` replaces
the reference's settings (given with no values: today's defaults) and ``--both-set`` adds settings to
both sides; ``--reference-tree PATH`` runs the reference side with the package of another checkout (a
``git worktree`` of an earlier commit: the issue's baseline itself rather than its switches). The
run's ACC with an int8 memory against an fp32 one, say:

    .venv/bin/python benchmarks/run_speed.py --shapes default --name run_int8_memory \
        --both-set method=retrieval --reference-set --fast-set encoder_backend=int8

Prints a table and writes ``benchmarks/results/run_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _harness import provenance, write_results
from _paired import describe, paired_difference

ROOT = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).with_name("rehearsal"))  # the console script beside this interpreter
REFERENCE = ["length_buckets=1", "length_sorted_eval=false"]
# The sparse benchmark's shape (profile_run.py's second config): few examples per class, one epoch, the
# head's predictions, so evaluation after each phase weighs more than training.
SHAPES: dict[str, list[str]] = {
    "default": [],
    "sparse": [
        "max_train_per_class=8",
        "batch_size=24",
        "replay.ratio=0.143",
        "epochs=1.0",
        "prediction=head",
    ],
}


def run_once(
    folder: Path, key: Path, overrides: list[str], threads: int, tree: Path | None = None
) -> dict[str, Any]:
    """One fresh ``rehearsal run`` process; with ``tree``, the package of that checkout (an earlier
    commit) runs instead of this one, its thread pools pinned by the environment (it may predate
    ``--threads``)."""
    # The tree's own default config: the baseline's settings as it shipped them (today's may name settings
    # that did not exist then).
    config = (tree if tree is not None else ROOT) / "configs" / "default.toml"
    command = [CLI, "run", str(config), "--output-dir", str(folder)]
    command += ["--key-file", str(key), "--json", "--set", "progress=false"]
    if tree is None:
        command += ["--threads", str(threads)]
    for item in overrides:
        command += ["--set", item]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    pins = {"OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"}
    env.update({name: str(threads) for name in pins} | {"TOKENIZERS_PARALLELISM": "false"})
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds of the run's one-thread process: on a shared machine they move far less with the
    # neighbours' load than wall time does, so the ratio is read from both.
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        raise SystemExit(f"the run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    summary = json.loads(done.stdout).get("summary", {})
    return {
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "acc": summary.get("average_accuracy"),
        "load_1m_before": load,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--name", default="run_speed", help="results/<name>.json")
    parser.add_argument("--fast-set", nargs="*", default=[], metavar="KEY=VALUE", help="fast side's settings")
    parser.add_argument(
        "--reference-set", nargs="*", default=REFERENCE, metavar="KEY=VALUE", help="reference's settings"
    )
    parser.add_argument("--both-set", nargs="*", default=[], metavar="KEY=VALUE", help="both sides' settings")
    parser.add_argument(
        "--reference-tree",
        type=Path,
        help="a checkout of an earlier commit whose package runs the reference side (with --reference-set)",
    )
    args = parser.parse_args()
    tree_commit = None
    if args.reference_tree is not None:
        tree_commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=args.reference_tree
        ).stdout.strip()
    record = provenance(
        seeds=args.seeds,
        threads=args.threads,
        reference=args.reference_set,
        fast=args.fast_set,
        both=args.both_set,
        reference_commit=tree_commit,
    )
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {s: {"reference": [], "fast": []} for s in args.shapes}
    with tempfile.TemporaryDirectory() as tmp:
        key = Path(tmp) / "key"
        subprocess.run([CLI, "keygen", "--out", str(key)], check=True, cwd=ROOT, capture_output=True)
        for seed in args.seeds:
            for shape in args.shapes:
                sides = ["reference", "fast"] if seed % 2 == 0 else ["fast", "reference"]
                for side in sides:
                    own = args.reference_set if side == "reference" else args.fast_set
                    overrides = [*SHAPES[shape], f"seed={seed}", *args.both_set, *own]
                    folder = Path(tmp) / f"{shape}-{side}-{seed}"
                    tree = args.reference_tree if side == "reference" else None
                    result = run_once(folder, key, overrides, args.threads, tree)
                    runs[shape][side].append({"seed": seed, **result})
                    print(
                        f"{shape:>8} seed {seed} {side:>9}: {result['wall_seconds']:6.1f} s "
                        f"(CPU {result['cpu_seconds']:6.1f} s)  "
                        f"ACC {result['acc']:.4f}  load {result['load_1m_before']:.1f}",
                        flush=True,
                    )
    table = {}
    print("\n| shape | reference wall s | fast wall s | wall ratio (per seed) | CPU ratio | ΔACC |")
    print("|---|---|---|---|---|---|")
    for shape, sides in runs.items():
        ref, fast = sides["reference"], sides["fast"]
        ratios = [f["wall_seconds"] / r["wall_seconds"] for f, r in zip(fast, ref, strict=True)]
        cpu_ratios = [f["cpu_seconds"] / r["cpu_seconds"] for f, r in zip(fast, ref, strict=True)]
        delta = paired_difference([f["acc"] for f in fast], [r["acc"] for r in ref])
        table[shape] = {
            "reference_wall": describe([r["wall_seconds"] for r in ref]),
            "fast_wall": describe([f["wall_seconds"] for f in fast]),
            "ratio": describe(ratios),
            "ratios": ratios,
            "cpu_ratio": describe(cpu_ratios),
            "cpu_ratios": cpu_ratios,
            "acc_delta": delta,
        }
        walls = f"{table[shape]['reference_wall']['mean']:.1f} | {table[shape]['fast_wall']['mean']:.1f}"
        print(
            f"| {shape} | {walls} "
            f"| {table[shape]['ratio']['mean']:.2f} ({', '.join(f'{r:.2f}' for r in ratios)}) "
            f"| {table[shape]['cpu_ratio']['mean']:.2f} "
            f"| {100 * delta['mean']:+.2f} pts |"
        )
    path = write_results(args.name, {"runs": runs, "table": table}, record)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
