"""Evaluation's cost per path on a trained run's weights: the given order (the reference), batches sorted
by length (the default), and sorted under bf16 autocast; with how often each path's predicted label agrees
with the reference's.

    .venv/bin/rehearsal run configs/default.toml --output-dir runs/default     # once: the weights read here
    .venv/bin/python benchmarks/eval_precision.py --run-dir runs/default --threads 1 --repeats 5

The texts are every test gloss of the run's stream, evaluated as the run does after each phase (eval batch
64, the run's max_length). Paths are timed in rotation, ``--repeats`` rounds, best round kept (the machine
is shared). Prints a table and writes ``benchmarks/results/eval_precision.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from _harness import provenance, write_results

from rehearsal.methods.inference import batch_logits
from rehearsal.runner.config import RunConfig
from rehearsal.runner.loop import load_stream
from rehearsal.runner.state import saved_config
from rehearsal.runner.strategies.base import model_path
from rehearsal.threads import size_thread_pools


def _logits(model: Any, tokenizer: Any, texts: list[str], config: RunConfig, path: str) -> Any:
    import torch

    by_length = path != "given order"
    if path.endswith("bf16"):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return batch_logits(model, tokenizer, texts, batch_size=64, max_length=config.max_length)
    return batch_logits(
        model, tokenizer, texts, batch_size=64, max_length=config.max_length, by_length=by_length
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=Path("runs/default"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--name", default="eval_precision", help="results/<name>.json")
    args = parser.parse_args()
    size_thread_pools(args.threads)
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    state = json.loads((args.run_dir / "state.json").read_text(encoding="utf-8"))
    config = saved_config(state["config"])
    weights = sorted((args.run_dir / "weights").glob("phase_*"), key=lambda p: int(p.name.split("_")[1]))[-1]
    model = AutoModelForSequenceClassification.from_pretrained(weights)
    tokenizer = AutoTokenizer.from_pretrained(model_path(config))
    texts = [ex.text for task in load_stream(config).tasks for ex in task.test]
    record = provenance(
        run_dir=str(args.run_dir), weights=weights.name, texts=len(texts), threads=args.threads
    )
    paths = ["given order", "sorted by length", "sorted, bf16"]
    best = dict.fromkeys(paths, float("inf"))
    predicted: dict[str, Any] = {}
    for _ in range(args.repeats):
        for path in paths:
            started = time.perf_counter()
            logits = _logits(model, tokenizer, texts, config, path)
            best[path] = min(best[path], time.perf_counter() - started)
            predicted[path] = logits.float().argmax(dim=1)
    reference = predicted["given order"]
    rows = {
        path: {
            "seconds": best[path],
            "texts_per_second": len(texts) / best[path],
            "speedup": best["given order"] / best[path],
            "agreement": float((predicted[path] == reference).float().mean()),
        }
        for path in paths
    }
    print(f"{len(texts)} test texts, {args.threads} thread(s), best of {args.repeats}\n")
    print("| path | texts/s | ÷ given order | labels equal to the reference |\n|---|---|---|---|")
    for path, row in rows.items():
        print(f"| {path} | {row['texts_per_second']:.0f} | {row['speedup']:.2f}× | {row['agreement']:.4f} |")
    print(f"wrote {write_results(args.name, {'paths': rows}, record)}")


if __name__ == "__main__":
    main()
