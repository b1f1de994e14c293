"""Every predictor over the memory read out of the same finished runs, beside the head and two ceilings.

A predictor changes how a run predicts, not how it trains, so one training per (method, seed) serves all
of them: for each phase of a finished ``random`` run (``benchmarks/selection.py``, sparse regime) this loads
the phase's saved weights and the run's memory as it stood then (the entries of the tasks seen so far),
embeds those entries and every test set once with the fine-tuned encoder, and scores

- ``head`` (the run's own read-out), ``ncm`` (50 entries per class, exactly what ``prediction = "ncm"``
  scores: the run's own draw), ``ncm-all``, ``knn`` (whole memory), ``lda`` (50 per class), ``lda-all``,
  ``local`` (whole memory);
- embedding-only candidates, which may not re-embed stored text: ``memory-vote`` (weighted vote of the
  frozen sentence encoder's stored vectors, ``rehearsal.methods.predictors.memory_vote``), ``stale-means``
  (each class's mean feature kept from the model that admitted it) and ``sdc-means`` (the same, moved by
  semantic drift compensation, Yu et al. CVPR 2020: each old mean follows the weighted mean drift of the
  new task's examples between the previous and the current model, weights exp(-d²/2σ²), σ = 0.3);
- ceilings: ``probe`` (a logistic-regression head fitted on every task's training data over the final
  encoder: what the encoder still separates) and ``multitask`` (the compute-matched joint training run).

    export REHEARSAL_MASTER_KEY=$(cat benchmarks/out/predictors/bench.key)
    .venv/bin/python benchmarks/predictors.py --stream sentiment --seeds 0 1 2 3 4
    .venv/bin/python benchmarks/predictors.py --stream wordnet --seeds 0 1 2 3 4 --rows final
    .venv/bin/python benchmarks/predictors.py --latency          # per-query cost at 10k and 100k entries

Writes ``benchmarks/results/predictors_<stream>.json`` (and ``predictors_latency.json``); each run's
read-out is kept in ``<run>/predictors_readout.json`` and reused while the run is unchanged.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

_KEY_GIVEN = bool(os.environ.get("REHEARSAL_MASTER_KEY"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _harness import provenance, write_results  # noqa: E402
from _paired import describe, paired_difference  # noqa: E402
from _runs import finished  # noqa: E402

from rehearsal.crypto.master_key import resolve_master_key  # noqa: E402
from rehearsal.memory.facade import RehearsalMemory  # noqa: E402
from rehearsal.methods.calibration import classification_head  # noqa: E402
from rehearsal.methods.inference import embed_texts  # noqa: E402
from rehearsal.methods.predictors import encoder_features, make_predictor, memory_vote, sample_ids  # noqa: E402
from rehearsal.methods.predictors.features import unit_rows  # noqa: E402
from rehearsal.runner.config import RunConfig  # noqa: E402
from rehearsal.runner.metrics import AccuracyMatrix  # noqa: E402
from rehearsal.runner.results import summarize  # noqa: E402
from rehearsal.runner.sentiment import load_sentiment_stream  # noqa: E402
from rehearsal.runner.strategies.base import model_path  # noqa: E402
from rehearsal.runner.strategies.replay import class_mean_seed  # noqa: E402
from rehearsal.runner.tasks import TaskStream, load_wordnet_stream  # noqa: E402

FEATURE_READOUTS = ("head", "ncm", "ncm-all", "knn", "lda", "lda-all", "local")
EMBEDDING_ONLY = ("memory-vote", "stale-means", "sdc-means")
READOUTS = (*FEATURE_READOUTS, *EMBEDDING_ONLY)
READOUT_FILE = "predictors_readout.json"
READOUT_VERSION = 1
SDC_SIGMA = 0.3
FEW_PER_CLASS = 50  # the "ncm" and "lda" read-outs: what prediction_per_class = 50 draws


def load_stream(name: str) -> TaskStream:
    loader = load_wordnet_stream if name == "wordnet" else load_sentiment_stream
    return loader(max_test_per_class=None)


def _accuracy(predicted: np.ndarray, truth: list[int]) -> float:
    return float(np.mean(predicted == np.asarray(truth))) if truth else 0.0


class DriftedMeans:
    """Per-class mean unit features kept from the model that admitted each class's examples, with counts;
    ``compensate`` moves them by semantic drift compensation."""

    def __init__(self) -> None:
        self.stale: dict[int, tuple[torch.Tensor, int]] = {}
        self.drifted: dict[int, tuple[torch.Tensor, int]] = {}

    def compensate(self, before: torch.Tensor, after: torch.Tensor) -> None:
        """``before``/``after`` (n, d): the new task's unit features under the previous and current model."""
        drift = after - before
        for label, (mean, count) in self.drifted.items():
            weights = torch.exp(-((before - mean) ** 2).sum(dim=1) / (2 * SDC_SIGMA**2))
            if float(weights.sum()) > 0:
                self.drifted[label] = (mean + (weights[:, None] * drift).sum(0) / weights.sum(), count)

    def admit(self, features: torch.Tensor, labels: list[int]) -> None:
        """Add a task's examples (unit features from the model that admits them) to each class's mean."""
        y = torch.as_tensor(labels)
        for label in sorted(set(labels)):
            rows = features[y == label]
            for table in (self.stale, self.drifted):
                mean, count = table.get(label, (torch.zeros(features.shape[1]), 0))
                table[label] = ((mean * count + rows.sum(0)) / (count + len(rows)), count + len(rows))

    def predict(self, table: dict[int, tuple[torch.Tensor, int]], features: torch.Tensor) -> np.ndarray:
        classes = sorted(table)
        means = unit_rows(torch.stack([table[c][0] for c in classes]))
        result: np.ndarray = np.asarray(classes)[(unit_rows(features) @ means.T).argmax(1).numpy()]
        return result


def probe_accuracy(
    train: torch.Tensor, labels: list[int], tests: list[tuple[torch.Tensor, list[int]]]
) -> float:
    """ACC of a multinomial logistic regression on unit ``train`` features (L-BFGS, weight decay 1e-4)."""
    classes = sorted(set(labels))
    x, y = unit_rows(train), torch.as_tensor([classes.index(v) for v in labels])
    w = torch.zeros(x.shape[1], len(classes), requires_grad=True)
    b = torch.zeros(len(classes), requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], max_iter=300, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w + b, y) + 1e-4 * (w**2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    scores = []
    with torch.no_grad():
        for features, truth in tests:
            predicted = np.asarray(classes)[(unit_rows(features) @ w + b).argmax(1).numpy()]
            scores.append(_accuracy(predicted, truth))
    return float(np.mean(scores))


def _labels_of(memory: RehearsalMemory, ids: list[int]) -> list[int]:
    rows = memory.entries(ids)
    return [int(rows[i].label) for i in ids]  # type: ignore[arg-type]


def _phase_bank(
    memory: RehearsalMemory,
    stream: TaskStream,
    config: RunConfig,
    model: Any,
    features: Any,
    phase: int,
    where: Any,
) -> tuple[list[int], list[int], torch.Tensor, list[torch.Tensor]]:
    """(ids, labels, features) of every memory entry of the tasks seen by ``phase``, and each test set's
    features, all from the phase's model."""
    seen = sorted({stream.label_id(lab) for t in stream.tasks[: phase + 1] for lab in t.labels})
    ids, labels = sample_ids(memory, seen, None, seed=[0], where=where)
    bank = features(model, memory.get_texts(ids))
    tests = [features(model, [ex.text for ex in t.test]) for t in stream.tasks]
    return ids, labels, bank, tests


def _record_predictors(
    matrices: dict[str, AccuracyMatrix],
    memory: RehearsalMemory,
    stream: TaskStream,
    config: RunConfig,
    model: Any,
    phase: int,
    where: Any,
    bank_of_phase: tuple[list[int], list[int], torch.Tensor, list[torch.Tensor]],
) -> None:
    """Fit every feature predictor on the phase's memory and record its row; the memory's own vote too."""
    ids, labels, bank, tests = bank_of_phase
    position = {i: row for row, i in enumerate(ids)}
    seen = sorted(set(labels))
    few, few_labels = sample_ids(
        memory, seen, FEW_PER_CLASS, seed=class_mean_seed(config.seed, phase), where=where
    )
    few_bank = bank[[position[i] for i in few]]
    truths = [[stream.label_id(ex.label) for ex in t.test] for t in stream.tasks]
    for name in FEATURE_READOUTS:
        source, source_labels = (few_bank, few_labels) if name in ("ncm", "lda") else (bank, labels)
        predictor = make_predictor(name.removesuffix("-all"))
        predictor.fit(source, source_labels, head=classification_head(model))
        for j in range(len(stream.tasks)):
            matrices[name].record(phase, j, _accuracy(predictor.predict(tests[j]), truths[j]))
    for j, t in enumerate(stream.tasks):
        vectors = embed_texts([ex.text for ex in t.test], memory.encoder)
        voted, _ = memory_vote(memory, vectors=vectors, where=where)
        matrices["memory-vote"].record(phase, j, _accuracy(voted, truths[j]))


def read_out(folder: Path, stream: TaskStream, keys: Any, *, rows: str = "all") -> dict[str, Any]:
    """Every read-out's accuracy matrix for the finished run in ``folder``, and the probe ceiling.

    ``rows="final"`` reads the predictors out after the last phase only (ACC, no forgetting) and follows
    the embedding-only means through every phase with only the features drift compensation needs: a
    quarter of the encoder passes on the WordNet stream."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    config = RunConfig.from_dict(json.loads((folder / "results.json").read_text())["config"])
    tokenizer = AutoTokenizer.from_pretrained(model_path(config))
    names = [t.name for t in stream.tasks]
    matrices = {name: AccuracyMatrix(names) for name in READOUTS}
    truths = [[stream.label_id(ex.label) for ex in t.test] for t in stream.tasks]
    means, next_before, probe = DriftedMeans(), None, None
    started = time.perf_counter()

    def features(model: Any, texts: list[str]) -> torch.Tensor:
        return encoder_features(
            model, tokenizer, texts, batch_size=config.eval_batch_size, max_length=config.max_length
        )

    last = len(stream.tasks) - 1
    with RehearsalMemory.open(folder / "memory", keys=keys, read_only=True) as memory:
        for phase, task in enumerate(stream.tasks):
            model = AutoModelForSequenceClassification.from_pretrained(folder / "weights" / f"phase_{phase}")
            model.eval()
            where = {"task": {"$in": names[: phase + 1]}}
            own_ids = memory.ids({"task": task.name})
            if rows == "all" or phase == last:
                ids, labels, bank, tests = _phase_bank(memory, stream, config, model, features, phase, where)
                position = {i: row for row, i in enumerate(ids)}
                own = unit_rows(bank[[position[i] for i in own_ids]])
                _record_predictors(
                    matrices, memory, stream, config, model, phase, where, (ids, labels, bank, tests)
                )
            else:
                own = unit_rows(features(model, memory.get_texts(own_ids)))
            # Embedding-only: this task's examples enter with the features of the model that admits them.
            if next_before is not None:
                means.compensate(next_before, own)
            means.admit(own, _labels_of(memory, own_ids))
            if rows == "all" or phase == last:
                for j in range(len(stream.tasks)):
                    matrices["stale-means"].record(
                        phase, j, _accuracy(means.predict(means.stale, tests[j]), truths[j])
                    )
                    matrices["sdc-means"].record(
                        phase, j, _accuracy(means.predict(means.drifted, tests[j]), truths[j])
                    )
                shown = ", ".join(
                    f"{n} {np.mean(matrices[n].matrix[phase, : phase + 1]):.3f}"
                    for n in ("head", "ncm", "knn", "lda-all", "sdc-means")
                )
                print(f"  {folder.name} phase {phase} ({task.name}): {shown}", flush=True)
            if phase < last:
                upcoming = memory.ids({"task": stream.tasks[phase + 1].name})
                next_before = unit_rows(features(model, memory.get_texts(upcoming)))
            else:
                probe = probe_accuracy(bank, labels, list(zip(tests, truths, strict=True)))
    return {
        "version": READOUT_VERSION,
        "matrices": {name: m.to_dict() for name, m in matrices.items()},
        "probe": probe,
        "rows": rows,
        "seconds": time.perf_counter() - started,
    }


def cached_read_out(folder: Path, stream: TaskStream, keys: Any, *, rows: str = "all") -> dict[str, Any]:
    result = json.loads((folder / "results.json").read_text())
    cached = folder / READOUT_FILE
    if cached.is_file():
        entry: dict[str, Any] = json.loads(cached.read_text())
        same = entry.get("version") == READOUT_VERSION and entry.get("config") == result["config"]
        if same and entry.get("rows") in (rows, "all"):
            return entry
    entry = {**read_out(folder, stream, keys, rows=rows), "config": result["config"]}
    cached.write_text(json.dumps(entry) + "\n")
    return entry


def summarise(runs: Path, stream: TaskStream, seeds: list[int], keys: Any, rows: str) -> dict[str, Any]:
    """Per read-out: ACC (and forgetting where every row was read out) over the seeds whose random run is
    finished, paired by seed against the head and against the multitask run where that seed has one."""
    acc: dict[str, dict[int, float]] = {name: {} for name in (*READOUTS, "probe", "multitask")}
    forgetting: dict[str, list[float]] = {name: [] for name in READOUTS}
    used: list[int] = []
    for seed in seeds:
        folder, joint = runs / f"random_s{seed}", runs / f"multitask_s{seed}"
        if not finished(folder):
            print(f"seed {seed}: the random run is not finished; skipped", file=sys.stderr)
            continue
        entry = cached_read_out(folder, stream, keys, rows=rows)
        for name in READOUTS:
            summary = summarize(AccuracyMatrix.from_dict(entry["matrices"][name]))
            acc[name][seed] = summary["average_accuracy"]
            if summary["forgetting"] is not None:
                forgetting[name].append(summary["forgetting"])
        acc["probe"][seed] = entry["probe"]
        if finished(joint):
            acc["multitask"][seed] = json.loads((joint / "results.json").read_text())["summary"][
                "average_accuracy"
            ]
        used.append(seed)

    def paired(name: str, other: str) -> dict[str, Any] | None:
        common = [s for s in acc[name] if s in acc[other]]
        if not common:
            return None
        return {
            **paired_difference([acc[name][s] for s in common], [acc[other][s] for s in common]),
            "seeds": common,
        }

    table: dict[str, Any] = {}
    for name, by_seed in acc.items():
        if not by_seed:
            continue
        row: dict[str, Any] = {"average_accuracy": describe(list(by_seed.values())), "per_seed": by_seed}
        if forgetting.get(name):
            row["forgetting"] = describe(forgetting[name])
        if name != "head":
            row["vs_head"] = paired(name, "head")
        if name != "multitask":
            row["vs_multitask"] = paired(name, "multitask")
        table[name] = row
    return {"seeds": used, "rows": rows, "table": table}


def print_table(stream: str, summary: dict[str, Any]) -> None:
    def interval(d: dict[str, Any] | None) -> str:
        if not d:
            return "—"
        low, high = d.get("ci_low"), d.get("ci_high")
        span = "" if low is None else f" [{100 * low:+.1f}, {100 * high:+.1f}]"
        return f"{100 * d['mean']:+.1f}{span}"

    print(f"\n{stream}: seeds {summary['seeds']}")
    print("| read-out | ACC | forgetting | vs head (points) | vs multitask (points) |")
    print("|---|---|---|---|---|")
    for name, row in summary["table"].items():
        a = row["average_accuracy"]
        f = row.get("forgetting")
        fs = "—" if f is None else f"{f['mean']:.3f}"
        print(
            f"| {name} | {a['mean']:.3f} ± {a['sd']:.3f} | {fs} | {interval(row.get('vs_head'))} | "
            f"{interval(row.get('vs_multitask'))} |"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stream", choices=["wordnet", "sentiment"], default="wordnet")
    parser.add_argument("--runs", type=Path, default=None, help="default: benchmarks/out/predictors/<stream>")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--rows",
        choices=["all", "final"],
        default="all",
        help="read predictors out after every phase or the last",
    )
    parser.add_argument("--latency", action="store_true", help="measure per-query cost instead")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.latency:
        from predictors_latency import main as latency

        return latency(args.threads)
    if not _KEY_GIVEN:
        raise SystemExit("set REHEARSAL_MASTER_KEY to the key the runs were made with")
    run = provenance(seeds=args.seeds, stream=args.stream, threads=args.threads, rows=args.rows)
    runs = args.runs or Path("benchmarks/out/predictors") / args.stream
    summary = summarise(runs, load_stream(args.stream), args.seeds, resolve_master_key(), args.rows)
    print_table(args.stream, summary)
    path = write_results(f"predictors_{args.stream}", summary, run)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
