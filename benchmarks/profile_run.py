"""Where a run's time goes: one ``rehearsal run`` under cProfile, its wall time split into parts.

The parts are the cumulative times of the functions that do them (nested calls counted in their caller,
so the parts overlap only where one calls another, e.g. replay collation inside the Trainer's steps,
which is why "training steps" is reported without it):

- setup: the stream, the model, the tokenizer (``_start`` and the first ``load_model``)
- phase data: tokenising and embedding a phase's examples (``phase_context``)
- training steps: ``Trainer.train`` less the collation it calls
- replay collation: ``RehearsalCollator.__call__`` (search, fetch and decrypt, tokenise)
- memory admission: the callback's end-of-phase add (``RehearsalCallback.on_train_end``)
- predictor fit: features over the memory and the fit (``fit_predictor``)
- evaluation: every seen task after every phase (``_evaluate``)
- checkpoints: weights, predictor arrays, state and seals (``_save_weights``, ``_write_state``)

cProfile costs some speed in Python-heavy parts; the shares are what to read, not the seconds.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/profile_run.py --threads 1       # configs/default.toml
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/profile_run.py --threads 1 --name profile_sparse \\
        --set max_train_per_class=8 --set replay.ratio=0.143 --set epochs=1.0

Prints a table and writes ``benchmarks/results/<name>.json``.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from _harness import provenance, write_results

from rehearsal.crypto.keys import KeyRing
from rehearsal.runner.config import RunConfig
from rehearsal.runner.overrides import apply_overrides
from rehearsal.threads import size_thread_pools

ROOT = Path(__file__).resolve().parent.parent
# part -> (file name ends with, function name); the first match of each is read.
PARTS: dict[str, list[tuple[str, str]]] = {
    "setup": [("loop.py", "_start"), ("strategies/base.py", "load_model")],
    "phase data": [("phase.py", "phase_context")],
    "training steps": [("transformers/trainer.py", "train")],
    "replay collation": [("replay/collator.py", "__call__")],
    "memory admission": [("replay/callback.py", "on_train_end")],
    "predictor fit": [("strategies/base.py", "fit_predictor")],
    "evaluation": [("loop.py", "_evaluate")],
    "checkpoints": [("loop.py", "_save_weights"), ("loop.py", "_write_state")],
}


def cumulative(stats: pstats.Stats, where: str, name: str) -> float:
    """Summed cumulative seconds of the functions called ``name`` in a file whose path ends with ``where``
    (the outermost frames: a function that calls itself is counted once by cProfile's cumtime)."""
    total = 0.0
    for (filename, _, function), row in stats.stats.items():  # type: ignore[attr-defined]
        if function == name and filename.replace(os.sep, "/").endswith(where):
            total += row[3]
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "default.toml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--name", default="profile_default")
    args = parser.parse_args()
    plan = size_thread_pools(args.threads)
    record = provenance(threads=plan.threads, overrides=args.overrides)
    from rehearsal.runner.loop import run

    config = RunConfig.from_file(args.config)
    if args.overrides:
        config = apply_overrides(config, args.overrides)
    config.progress = False
    profile = cProfile.Profile()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        profile.enable()
        result = run(config, output_dir=str(Path(tmp) / "run"), keys=KeyRing.generate())
        profile.disable()
        wall = time.perf_counter() - started
    stats = pstats.Stats(profile)
    parts: dict[str, float] = {
        part: sum(cumulative(stats, where, name) for where, name in spots) for part, spots in PARTS.items()
    }
    parts["training steps"] = max(parts["training steps"] - parts["replay collation"], 0.0)
    parts["other"] = max(wall - sum(parts.values()), 0.0)
    acc = result.summary["average_accuracy"]
    print(f"{config.method} / {config.prediction}: wall {wall:.1f} s, ACC {acc}")
    print("| part | seconds | share of wall |\n|---|---|---|")
    for part, seconds in parts.items():
        print(f"| {part} | {seconds:.1f} | {seconds / wall:.1%} |")
    payload: dict[str, Any] = {
        "config": str(args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config),
        "wall_seconds": wall,
        "acc": result.summary["average_accuracy"],
        "parts_seconds": parts,
        "parts_share": {part: seconds / wall for part, seconds in parts.items()},
        "phase_seconds": result.phase_seconds,
    }
    path = write_results(args.name, payload, record)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
