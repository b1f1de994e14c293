"""What choosing replay costs per step, by selection mode, as a ratio to random replay in the same run.

Builds (once, cached under benchmarks/out/selection_cost/) an embedding-only memory of ``--n`` clustered
synthetic unit vectors of MiniLM's width (default 1M; ``--tasks`` tasks, ``--labels`` labels that follow
the clusters), then times ``ReplaySelector.select`` — the collator's search-and-choose path, without
fetching texts or tokenising, which every mode does alike — for a batch of ``--batch`` query vectors
choosing ``--replay`` ids, excluding the task being trained as the collator does. The modes take turns
call by call, so load on the machine falls on all of them alike; the table gives each mode's median and
its ratio to random's.

    .venv/bin/python benchmarks/selection_cost.py                      # every mode the library has
    .venv/bin/python benchmarks/selection_cost.py --modes random hybrid diverse coverage mir
    .venv/bin/python benchmarks/selection_cost.py --model-cost         # + MIR's virtual step on MiniLM
    .venv/bin/python benchmarks/selection_cost.py --eligible all       # no task filter on the search

A mode that needs the model (``mir``) scores its candidates in the Trainer: the selector part is timed here
and ``--model-cost`` estimates the model side separately (one virtual SGD step on the new batch plus the
candidates' loss before and after it, against an ordinary training step of new + replay).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _harness import provenance, write_record  # benchmarks/ is on sys.path when run as a script

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from rehearsal.config import REPLAY_MODES, ReplayConfig
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.replay.selector import ReplaySelector

HERE = Path(__file__).resolve().parent
DIM = 384


def clustered(rng: np.random.Generator, centres: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, DIM) unit vectors around random centres (in-cluster cosine ~0.9) and each one's centre."""
    picks = rng.integers(0, len(centres), n)
    x = centres[picks] + rng.standard_normal((n, DIM)).astype(np.float32) * (0.5 / np.sqrt(DIM))
    return x / np.linalg.norm(x, axis=1, keepdims=True), picks


def build(path: Path, *, n: int, tasks: int, labels: int, clusters: int, batch: int) -> None:
    """An embedding-only memory of ``n`` entries, task by task; a label is a function of the cluster."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((clusters, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    np.save(path.with_suffix(".centres.npy"), centres)
    started = time.perf_counter()
    with RehearsalMemory.create(path, embedding_only=True, dim=DIM, encoder_name=f"synthetic-{DIM}") as mem:
        for start in range(0, n, batch):
            size = min(batch, n - start)
            vectors, picks = clustered(rng, centres, size)
            task = f"t{start * tasks // n}"
            mem.add(
                vectors=vectors,
                metadata=[{"task": task, "label": int(c % labels)} for c in picks],
                sources=[f"synthetic/{start + j}" for j in range(size)],
            )
            print(f"  built {start + size:>9,} entries  {time.perf_counter() - started:7.1f} s", flush=True)


def time_selection(
    mem: RehearsalMemory, modes: list[str], queries: np.ndarray, args: argparse.Namespace
) -> dict[str, list[float]]:
    # What the collator passes for the task being trained (the memory holds no entry of it).
    eligible = {"task": {"$ne": "current"}} if args.eligible == "task" else None
    selectors = {m: ReplaySelector(mem, ReplayConfig(mode=m, k=args.k), eligible=eligible) for m in modes}
    rngs = {m: np.random.default_rng(1) for m in modes}
    times: dict[str, list[float]] = {m: [] for m in modes}
    returned: dict[str, int] = {}
    for step in range(args.warmup + args.steps):
        batch = queries[(step * args.batch) % len(queries) :][: args.batch]
        for mode in modes:  # modes take turns, so a burst of load hits all of them
            t0 = time.perf_counter()
            choice = selectors[mode].select(batch, args.replay, rng=rngs[mode])
            elapsed = time.perf_counter() - t0
            # A mode that ranks with the model (mir) may hand the Trainer a larger candidate pool.
            if len(choice) < args.replay:
                raise SystemExit(f"{mode} chose {len(choice)} ids, fewer than {args.replay}")
            returned[mode] = len(choice)
            if step >= args.warmup:
                times[mode].append(elapsed)
    print("ids returned per call:", returned)
    return times


def model_cost(args: argparse.Namespace) -> dict[str, Any]:
    """MIR's model side on the packaged MiniLM: extra time per step relative to a plain training step."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rehearsal.embedding import default_model_path

    torch.manual_seed(0)
    path = default_model_path()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=45)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    pool = args.pool_factor * args.replay

    def batch_of(size: int) -> dict[str, torch.Tensor]:
        words = [" ".join(f"word{(i * 7 + j) % 997}" for j in range(args.max_length)) for i in range(size)]
        enc = tok(words, truncation=True, max_length=args.max_length, padding=True, return_tensors="pt")
        return {**enc, "labels": torch.arange(size) % 45}

    def train_step(batch: dict[str, torch.Tensor]) -> None:
        opt.zero_grad()
        model(**batch).loss.backward()
        opt.step()

    def pool_losses(batch: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            model(**batch)

    new, mixed, candidates = batch_of(args.batch), batch_of(args.batch + args.replay), batch_of(pool)
    plain, mir_extra = [], []
    for step in range(2 + args.model_steps):
        t0 = time.perf_counter()
        train_step(mixed)
        t1 = time.perf_counter()
        # The virtual step: a copy of the weights, one SGD step on the new batch, the candidates' loss
        # before and after it, the weights put back. (A careful implementation reuses the new batch's
        # gradient for the real step; this counts it again, so it is an upper bound.)
        saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
        pool_losses(candidates)
        train_step(new)
        pool_losses(candidates)
        model.load_state_dict(saved)
        t2 = time.perf_counter()
        if step >= 2:
            plain.append(t1 - t0)
            mir_extra.append(t2 - t1)
    step_s, extra_s = statistics.median(plain), statistics.median(mir_extra)
    return {
        "model": "all-MiniLM-L6-v2 + 45-way head",
        "threads": torch.get_num_threads(),
        "tokens": args.max_length,
        "pool": pool,
        "train_step_ms": round(1000 * step_s, 1),
        "mir_extra_ms": round(1000 * extra_s, 1),
        "mir_step_over_plain_step": round((step_s + extra_s) / step_s, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", nargs="+", default=list(REPLAY_MODES))
    parser.add_argument("--n", type=int, default=1_000_000, help="entries in the memory")
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--labels", type=int, default=100)
    parser.add_argument("--clusters", type=int, default=2_000)
    parser.add_argument("--batch", type=int, default=24, help="query vectors per step (new examples)")
    parser.add_argument("--replay", type=int, default=8, help="ids chosen per step")
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument(
        "--eligible", choices=["task", "all"], default="task", help="filter the search as the collator does"
    )
    parser.add_argument("--model-cost", action="store_true", help="also estimate MIR's model-side cost")
    parser.add_argument("--pool-factor", type=int, default=5)
    parser.add_argument("--max-length", type=int, default=32)
    parser.add_argument("--model-steps", type=int, default=10)
    parser.add_argument("--cache", type=Path, default=HERE / "out" / "selection_cost")
    parser.add_argument("--out", type=Path, default=HERE / "out" / "selection_cost.json")
    args = parser.parse_args()
    record = provenance()  # commit, command, machine, load at start
    if "random" not in args.modes:
        args.modes.insert(0, "random")
    for mode in args.modes:
        ReplayConfig(mode=mode)  # an unknown mode fails here, before the memory is built

    path = args.cache / f"memory_{args.n}"
    built = path.with_suffix(".built")  # written once the build has finished
    if path.exists() and not built.exists():
        raise SystemExit(f"{path} holds an unfinished build: remove it and run again")
    if not path.exists():
        args.cache.mkdir(parents=True, exist_ok=True)
        build(path, n=args.n, tasks=args.tasks, labels=args.labels, clusters=args.clusters, batch=50_000)
        built.write_text(f"{args.n} entries, {args.tasks} tasks, {args.labels} labels\n")
    centres = np.load(path.with_suffix(".centres.npy"))
    queries, _ = clustered(np.random.default_rng(2), centres, args.batch * 64)
    t0 = time.perf_counter()
    with RehearsalMemory.open(path, read_only=True) as mem:
        open_s = time.perf_counter() - t0
        spec = mem.stats()["index_spec"]
        times = time_selection(mem, args.modes, queries, args)

    base = statistics.median(times["random"])
    table = {
        mode: {
            "median_ms": round(1000 * statistics.median(t), 3),
            "p90_ms": round(1000 * float(np.percentile(t, 90)), 3),
            "ratio_to_random": round(statistics.median(t) / base, 2),
        }
        for mode, t in times.items()
    }
    result: dict[str, Any] = {
        "entries": args.n,
        "index_spec": spec,
        "open_s": round(open_s, 2),
        "batch": args.batch,
        "replay": args.replay,
        "k": args.k,
        "eligible": args.eligible,
        "steps": args.steps,
        "modes": table,
    }
    print(f"{args.n:,} entries ({spec}), batches of {args.batch} choosing {args.replay}, {args.steps} steps")
    print("| mode | median ms | p90 ms | ÷ random |\n|---|---|---|---|")
    for mode, row in table.items():
        print(f"| {mode} | {row['median_ms']:.2f} | {row['p90_ms']:.2f} | {row['ratio_to_random']:.2f} |")
    if args.model_cost:
        side = model_cost(args)
        result["mir_model_side"] = side
        # The whole training step (model + selection) of each mode against random's: what a user waits.
        step_ms = side["train_step_ms"]
        for mode, row in table.items():
            extra = side["mir_extra_ms"] if mode == "mir" else 0.0
            total = step_ms + row["median_ms"] + extra
            row["training_step_ratio_to_random"] = round(total / (step_ms + table["random"]["median_ms"]), 3)
        print(json.dumps(side, indent=2))
        print("training step (MiniLM step + selection) ÷ random's:")
        print({mode: row["training_step_ratio_to_random"] for mode, row in table.items()})
    print(f"wrote {write_record(args.out, result, record)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
