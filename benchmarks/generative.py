"""Generative replay on the bundled stream: naive vs random replay (real text) vs generative, guided and not.

The runs take ``configs/default.toml`` (5 WordNet tasks, 45 classes, 20 train per class, 2 epochs, 16
replay rows per 16 new) and change only the method, so every replay method has the same budget. The
generative runs keep an embedding-only memory (no text) and plant ``--canaries`` random sentences in the
generator's first-task data; their copy reports and generation costs come from
``<run>/generative/phase_<p>.json``.

    .venv/bin/python benchmarks/generative.py --seeds 0                # one seed, the four variants
    .venv/bin/python benchmarks/generative.py --variants generative --seeds 0 1 2

A finished run (all its phases in state.json) is read back, not rerun; an interrupted one is resumed. Each
run's memory key is ``memory.key`` in its folder (made on the first call; REHEARSAL_MASTER_KEY, when
set, is used instead), so a later call can reopen the memory. Prints a table and writes
benchmarks/out/generative/summary.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
from _harness import provenance, write_record
from _runs import finished

from rehearsal.crypto.keys import KeyRing
from rehearsal.runner.config import RunConfig
from rehearsal.runner.loop import run

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "out" / "generative"
VARIANTS: dict[str, dict[str, Any]] = {
    "naive": {"method": "naive", "calibration": "none"},
    "random": {"method": "random"},
    "generative": {"method": "generative"},
    "generative-unguided": {"method": "generative", "generative": {"guide": False}},
}


def _config(variant: str, seed: int, args: argparse.Namespace) -> RunConfig:
    base = RunConfig.from_file(ROOT / "configs" / "default.toml").to_dict()
    changes = dict(VARIANTS[variant])
    generative = {
        "canaries": args.canaries,
        "per_class": args.per_class,
        "max_new_tokens": args.max_new_tokens,
        **changes.pop("generative", {}),
    }
    if args.tasks:
        base["tasks"] = args.tasks
    return RunConfig.from_dict(
        {
            **base,
            **changes,
            "generative": generative,
            # The committed figures read out the shared head (the default until configs/default.toml chose
            # lda), and lda needs a replay memory, which the naive and generative variants do not keep.
            "prediction": "head",
            "seed": seed,
            "progress": False,
            "output_dir": str(OUT / f"{variant}_s{seed}"),
        }
    )


def _progress(folder: Path) -> dict[str, Any]:
    """An unfinished run's phases so far and its accuracy matrix (rows of unfinished phases are null)."""
    state = folder / "state.json"
    if not state.exists():
        return {"completed_phases": 0}
    saved = json.loads(state.read_text())
    return {"completed_phases": saved["completed_phases"], "accuracy_matrix": saved["accuracy"]["matrix"]}


def _key_file(folder: Path) -> None:
    """A key for the run's memory in its folder (owner-only), unless the environment names one."""
    key = folder / "memory.key"
    if os.environ.get("REHEARSAL_MASTER_KEY") or key.exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(KeyRing.generate().export_base64() + "\n")


def _generation(folder: Path) -> dict[str, Any]:
    """The generative runs' per-phase reports, summed: cost, rejections, copies."""
    phases = [json.loads(p.read_text()) for p in sorted((folder / "generative").glob("phase_*.json"))]
    if not phases:
        return {}
    logs = [p["logs"] for p in phases]
    total = {
        k: sum(float(log.get(k, 0.0)) for log in logs) for k in logs[0] if k.startswith(("generat", "guide"))
    }
    first = phases[0]["copies_generated"]
    copied = sum(p["copies_generated"]["generations_copying_training"] for p in phases)
    kept_copied = sum(p["copies_kept"]["generations_copying_training"] for p in phases)
    kept = sum(p["copies_kept"]["generations"] for p in phases)
    return {
        **total,
        "tokens_per_wall_second": total["generated_tokens"] / max(total["generation_wall_seconds"], 1e-9),
        "tokens_per_cpu_second": total["generated_tokens"] / max(total["generation_cpu_seconds"], 1e-9),
        "canaries": first["canaries"],
        "canaries_verbatim": first["canaries_verbatim"],
        "canaries_near": first["canaries_near"],
        "canary_secrets": first.get("canary_secrets"),
        "near_copy_rate_generated": copied / max(total["generated_texts"], 1.0),
        "near_copy_rate_kept": kept_copied / max(kept, 1),
        "phases": phases,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds to run")
    parser.add_argument("--tasks", nargs="+", help="a subset of the bundled tasks (default: all five)")
    parser.add_argument("--canaries", type=int, default=20, help="canaries planted (generative runs)")
    parser.add_argument("--per-class", type=int, default=8, help="generations kept per old class")
    parser.add_argument("--max-new-tokens", type=int, default=24, help="tokens written per generation")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument(
        "--read-only", action="store_true", help="run nothing: report finished runs, list unfinished ones"
    )
    parser.add_argument("--results", type=Path, help="also write a small summary JSON here (no texts)")
    args = parser.parse_args()
    record = provenance()  # commit, command, machine, load at start
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    OUT.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    partial: list[dict[str, Any]] = []
    for seed in args.seeds:
        for variant in args.variants:
            config = _config(variant, seed, args)
            folder = Path(config.output_dir)
            started, cpu = time.perf_counter(), time.process_time()
            if not finished(folder):
                if args.read_only:
                    partial.append({"variant": variant, "seed": seed, **_progress(folder)})
                    continue
                load = os.getloadavg()[0]
                _key_file(folder)
                run(config, resume=(folder / "state.json").exists())
                # The run's own cost, kept beside it: a later call reads the run back and costs nothing.
                cost = {
                    "cpu_seconds": time.process_time() - cpu,
                    "wall_seconds": time.perf_counter() - started,
                    "load_average_start": load,
                    "load_average_end": os.getloadavg()[0],
                }
                (folder / "bench_cost.json").write_text(json.dumps(cost) + "\n", encoding="utf-8")
            results = json.loads((folder / "results.json").read_text())
            own = folder / "bench_cost.json"
            row = {
                "variant": variant,
                "seed": seed,
                "acc": results["summary"]["average_accuracy"],
                "forgetting": results["summary"]["forgetting"],
                "wall_seconds": results["cost"]["wall_seconds"],
                "this_call_cpu_seconds": time.process_time() - cpu,
                "this_call_wall_seconds": time.perf_counter() - started,
                "replayed": results["cost"]["replayed_examples"],
                "run_cost": json.loads(own.read_text()) if own.exists() else None,
                "accuracy_matrix": results["accuracy"],
                "generation": _generation(folder),
            }
            rows.append(row)
            shown = {k: v for k, v in row.items() if k not in ("generation", "accuracy_matrix")}
            print(json.dumps(shown), flush=True)
            (OUT / "summary.json").write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    print(
        "\n| variant | seeds | ACC | forgetting | replayed | rejected | canaries verbatim/near | copy rate |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for variant in args.variants:
        mine = [r for r in rows if r["variant"] == variant]
        if not mine:
            continue
        acc = [r["acc"] for r in mine]
        fgt = [r["forgetting"] for r in mine]
        gen = [r["generation"] for r in mine if r["generation"]]
        spread = f" ± {statistics.stdev(acc):.3f}" if len(acc) > 1 else ""
        rejected = f"{sum(g['guide_rejected'] for g in gen):.0f}" if gen else "—"
        canary = (
            f"{sum(g['canaries_verbatim'] for g in gen)} / {sum(g['canaries_near'] for g in gen)}"
            if gen
            else "—"
        )
        rate = f"{statistics.mean(g['near_copy_rate_generated'] for g in gen):.3f}" if gen else "—"
        print(
            f"| {variant} | {len(mine)} | {statistics.mean(acc):.3f}{spread} | {statistics.mean(fgt):.3f} | "
            f"{mine[0]['replayed']} | {rejected} | {canary} | {rate} |"
        )
    for entry in partial:
        print(f"unfinished: {entry}")
    if args.results:
        summary = {**_summary(rows, args), "unfinished": partial}
        print(f"wrote {write_record(args.results, summary, record)}")


def _summary(rows: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """Per-variant means and each run's figures, generation totals without the phases' texts."""
    variants: dict[str, Any] = {}
    for variant in args.variants:
        mine = [r for r in rows if r["variant"] == variant]
        if mine:
            variants[variant] = {
                "seeds": [r["seed"] for r in mine],
                "acc_mean": statistics.mean(r["acc"] for r in mine),
                "forgetting_mean": statistics.mean(r["forgetting"] for r in mine),
            }
    naive = variants.get("naive")
    for entry in variants.values():
        if naive and naive["forgetting_mean"] > 0:
            entry["forgetting_cut_vs_naive"] = 1 - entry["forgetting_mean"] / naive["forgetting_mean"]
    runs = []
    for r in rows:
        gen = {k: v for k, v in r["generation"].items() if k != "phases"}
        if r["generation"]:
            gen["phase_logs"] = [p["logs"] for p in r["generation"]["phases"]]
            gen["class_floors"] = [p.get("class_floors") for p in r["generation"]["phases"]]
        runs.append(
            {
                k: v
                for k, v in r.items()
                if k not in ("generation", "this_call_cpu_seconds", "this_call_wall_seconds")
            }
            | {"generation": gen}
        )
    options = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "results"}
    return {"options": options, "variants": variants, "runs": runs}


if __name__ == "__main__":
    main()
