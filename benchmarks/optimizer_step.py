"""CPU milliseconds of one AdamW step over MiniLM's parameters, per implementation, beside one training
step's forward and backward pass for scale.

The run's optimizer with a head learning rate was ``torch.optim.AdamW`` with its default implementation,
which on a CPU walks the parameters one tensor at a time; the Trainer's own default is the fused one.
One thread, the bundled MiniLM as a 45-class classifier (the default run's head), random gradients; each
implementation steps ``--steps`` times after a warm-up step, and the implementations take turns round by
round so the machine's load falls on all alike:

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/optimizer_step.py

Prints a table and writes ``benchmarks/results/optimizer_step.json``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch
from _harness import provenance, write_results

IMPLEMENTATIONS: dict[str, dict[str, bool]] = {
    "loop": {},
    "foreach": {"foreach": True},
    "fused": {"fused": True},
}


def _model() -> Any:
    from transformers import AutoModelForSequenceClassification

    from rehearsal.embedding import default_model_path

    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(str(default_model_path()), num_labels=45)


def _step_ms(params: list[torch.Tensor], options: dict[str, bool], steps: int) -> float:
    optimizer = torch.optim.AdamW(params, lr=3e-4, **options)  # type: ignore[arg-type]
    optimizer.step()  # the state is allocated on the first step
    started = time.process_time()
    for _ in range(steps):
        optimizer.step()
    return 1000 * (time.process_time() - started) / steps


def _pass_ms(model: Any, batch: int, length: int, bf16: bool, repeats: int) -> tuple[float, float]:
    ids = torch.randint(1000, 5000, (batch, length))
    mask = torch.ones_like(ids)
    forward, backward = [], []
    for i in range(repeats + 1):
        started = time.process_time()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, attention_mask=mask).logits.float().sum()
        middle = time.process_time()
        loss.backward()
        if i:  # the first pass warms up
            forward.append(1000 * (middle - started))
            backward.append(1000 * (time.process_time() - middle))
    return statistics.median(forward), statistics.median(backward)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    record = provenance(threads=1, steps=args.steps, rounds=args.rounds)
    model = _model()
    params = list(model.parameters())
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    runs: dict[str, list[float]] = {name: [] for name in IMPLEMENTATIONS}
    for _ in range(args.rounds):
        for name, options in IMPLEMENTATIONS.items():
            runs[name].append(_step_ms(params, options, args.steps))
    passes = {}
    for arithmetic in ("fp32", "bf16"):
        forward, backward = _pass_ms(model, 24, 16, arithmetic == "bf16", 5)
        passes[arithmetic] = {"forward_ms": forward, "backward_ms": backward}
    table = {name: statistics.median(values) for name, values in runs.items()}
    print(f"{sum(p.numel() for p in params):,} parameters, one thread")
    print("\n| AdamW step | CPU ms (median) | ÷ loop |")
    print("|---|---|---|")
    for name, ms in table.items():
        print(f"| {name} | {ms:.1f} | {ms / table['loop']:.2f} |")
    print("\n| one step's passes, batch 24 x 16 tokens | forward ms | backward ms |")
    print("|---|---|---|")
    for arithmetic, row in passes.items():
        print(f"| {arithmetic} | {row['forward_ms']:.1f} | {row['backward_ms']:.1f} |")
    path = write_results("optimizer_step", {"runs": runs, "table": table, "passes": passes}, record)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
