"""The continual fine-tuning run loop: train task after task through the HF Trainer, evaluate every task.

``run(config)`` trains a model phase by phase with the strategy named by ``config.method`` (see
``rehearsal.run.strategies``), evaluates each task's test set after every phase with predictions over all
classes of the one shared head (class-incremental), and writes into the output folder:

    results.json  results.md  accuracy_heatmap.png  accuracy_over_time.png     (updated after each phase)
    state.json  weights/phase_<p>/  memory/  memory.key                        (what a resume needs)
    memory/versions.json  memory/audit.log                                     (a governed run's record)

After each phase the model weights (a folder per phase in a governed run, so every version stays
restorable unless ``keep_weights`` bounds them; only the latest otherwise), the accuracy matrix and the
memory's generation are saved; ``resume`` skips the phases already completed. A phase interrupted after
its examples entered the memory has them removed again before it is retrained, so nothing is admitted
twice. A method with a memory governs each phase as an update
(``rehearsal.governance.updates``: optional gate, version, audit entries).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from rehearsal.crypto.keys import KeyRing
from rehearsal.embedding import load_encoder
from rehearsal.errors import ConfigError
from rehearsal.governance.audit_log import AuditLog, default_log_path
from rehearsal.governance.audited import AuditedMemory
from rehearsal.governance.updates import govern_update, run_id_for, update_id
from rehearsal.governance.versions import withdraw_update
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.methods.inference import embed_texts, evaluate_accuracy
from rehearsal.replay.collator import RehearsalCollator
from rehearsal.replay.trainer import RehearsalTrainer
from rehearsal.run.config import RunConfig
from rehearsal.run.metrics import AccuracyMatrix, RunCost
from rehearsal.run.plots import plot_accuracy_heatmap, plot_accuracy_over_time
from rehearsal.run.preflight import STATE_FILE, preflight
from rehearsal.run.strategies import PhaseContext, Strategy, get_strategy
from rehearsal.run.strategies.base import model_path
from rehearsal.run.tasks import Task, TaskStream, load_jsonl_stream, load_wordnet_stream

__all__ = ["RunResult", "evaluate_accuracy", "load_stream", "run", "summarize"]

_STATE, _WEIGHTS, _MEMORY = STATE_FILE, "weights", "memory"
# Settings that may change between an interrupted run and its resume without changing the experiment.
_RESUMABLE_CHANGES = ("output_dir", "progress")


class RunResult:
    """The outcome of a run: the accuracy matrix, its summary and what it cost."""

    def __init__(
        self,
        config: RunConfig,
        matrix: AccuracyMatrix,
        cost: RunCost,
        output_dir: Path,
        phase_seconds: list[float],
        phase_logs: list[dict[str, float]] | None = None,
    ) -> None:
        self.config, self.matrix, self.cost, self.output_dir = config, matrix, cost, output_dir
        self.phase_seconds = phase_seconds
        self.phase_logs = [] if phase_logs is None else phase_logs  # Strategy.after_phase's numbers

    @property
    def summary(self) -> dict[str, Any]:
        return summarize(self.matrix)

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "accuracy": self.matrix.to_dict(),
            "summary": self.summary,
            "cost": self.cost.to_dict(),
            "phase_seconds": self.phase_seconds,
            "phase_logs": self.phase_logs,
        }

    def to_markdown(self) -> str:
        s = self.summary

        def fmt(value: float | None) -> str:
            return "—" if value is None else f"{value:.3f}"

        c = self.cost
        return "\n".join(
            [
                f"## {self.config.method} (loss={self.config.loss}, seed={self.config.seed})",
                "",
                self.matrix.to_markdown(),
                "",
                "| ACC | forgetting | BWT | wall s | replayed | memory bytes |",
                "|---|---|---|---|---|---|",
                f"| {fmt(s['average_accuracy'])} | {fmt(s['forgetting'])} | {fmt(s['backward_transfer'])} | "
                f"{c.wall_seconds:.1f} | {c.replayed_examples} | {c.memory_bytes_on_disk} |",
                "",
            ]
        )


def summarize(matrix: AccuracyMatrix) -> dict[str, Any]:
    """ACC after the last measured row; forgetting and BWT when two or more rows are complete (else None)."""
    r = matrix.matrix
    measured = [i for i in range(len(r)) if not np.isnan(r[i, : i + 1]).any()]
    out: dict[str, Any] = {
        "average_accuracy": None,
        "forgetting": None,
        "backward_transfer": None,
        "per_task_forgetting": None,
    }
    if measured:
        out["average_accuracy"] = matrix.average_accuracy(measured[-1])
    if matrix.completed_tasks >= 2:
        out["forgetting"] = matrix.forgetting()
        out["backward_transfer"] = matrix.backward_transfer()
        out["per_task_forgetting"] = matrix.per_task_forgetting()
    return out


def load_stream(config: RunConfig) -> TaskStream:
    """The task stream a config names: a JSON-lines file, or the bundled WordNet stream with its caps."""
    if config.data is not None:
        stream = load_jsonl_stream(config.data, seed=config.seed)
        return stream if config.tasks is None else TaskStream.from_tasks(stream.task(t) for t in config.tasks)
    return load_wordnet_stream(
        max_train_per_class=config.max_train_per_class,
        max_test_per_class=config.max_test_per_class,
        tasks=config.tasks,
        seed=0,
    )


def _phase_dataset(
    stream: TaskStream, tasks: tuple[Task, ...], tokenizer: Any, config: RunConfig, *, with_vectors: bool
) -> Any:
    from datasets import Dataset

    examples = [ex for task in tasks for ex in task.train]
    texts = [ex.text for ex in examples]
    encoded = tokenizer(texts, truncation=True, max_length=config.max_length)
    columns: dict[str, list[Any]] = {k: list(v) for k, v in encoded.items()}
    columns["labels"] = [stream.label_id(ex.label) for ex in examples]
    if with_vectors:
        columns[config.replay.text_column] = texts
        columns["task"] = [ex.task for ex in examples]
        columns[config.replay.vector_column] = [row.tolist() for row in embed_texts(texts)]
    return Dataset.from_dict(columns)


def _write_state(
    out: Path,
    config: RunConfig,
    completed: int,
    weights: Path | None,
    matrix: AccuracyMatrix,
    correct: dict[str, np.ndarray],
    generation: int,
    totals: dict[str, Any],
) -> None:
    """What a resume needs after ``completed`` phases (0: the run has started, nothing is trained)."""
    state = {
        "config": config.to_dict(),
        "completed_phases": completed,
        "accuracy": matrix.to_dict(),
        # Per-example results of the last evaluation: the next phase's staging baseline.
        "correct": {t: arr.astype(int).tolist() for t, arr in correct.items()},
        "memory_generation": generation,
        "totals": totals,
    }
    if weights is not None:
        state["checkpoint"] = str(weights.relative_to(out))
    _write_json(out / _STATE, state)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def _comparable(config: RunConfig) -> dict[str, Any]:
    data = config.to_dict()
    for name in _RESUMABLE_CHANGES:
        data.pop(name)
    return data


def _load_state(out: Path, config: RunConfig, *, resume: bool) -> dict[str, Any] | None:
    path = out / _STATE
    if not path.is_file():
        return None
    if not resume:
        raise ConfigError(f"{str(out)!r} already holds a run; resume it (--resume) or use another output dir")
    state: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    saved = RunConfig.from_dict(state["config"])
    if _comparable(saved) != _comparable(config):
        changed = sorted(k for k, v in _comparable(config).items() if _comparable(saved).get(k) != v)
        raise ConfigError(f"cannot resume {str(out)!r} with a different config; changed: {changed}")
    return state


def _open_memory(
    out: Path, keys: KeyRing, state: dict[str, Any] | None, pending: tuple[Task, ...], run_id: str
) -> None:
    """Create the memory, or on resume drop what an interrupted phase admitted before its state was saved.

    Both go through the memory's audit log: a new memory gets its baseline entry, a resumed one first logs
    what the interrupted phase changed (``AuditedMemory.reconcile``), then the removal of its entries.
    """

    path = out / _MEMORY
    if state is None:
        # A fresh run: nothing of an earlier attempt can be in its state, so it starts from nothing.
        shutil.rmtree(path, ignore_errors=True)
        memory = RehearsalMemory.create(path, keys=keys, encoder=load_encoder())
    else:
        memory = RehearsalMemory.open(path, keys=keys)
    try:
        log = AuditLog.open(default_log_path(path), keys)
        if state is not None:
            # A version recorded for the pending phase by a run that died before saving its state is not one.
            withdraw_update(path, update_id(run_id, int(state["completed_phases"])), log=log, actor=run_id)
        audited = AuditedMemory(memory, log, actor=run_id)
    except BaseException:
        memory.close()  # release the writer lock before the error leaves
        raise
    with audited:
        if state is not None and memory.generation != state["memory_generation"]:
            stale = memory.ids({"task": {"$in": [t.name for t in pending]}})
            if stale:
                audited.delete(stale)


def _memory_generation(out: Path, keys: KeyRing) -> int:

    with RehearsalMemory.open(out / _MEMORY, keys=keys, read_only=True) as memory:
        return memory.generation


def _save_weights(strategy: Strategy, model: Any, out: Path, phase: int) -> Path:
    """Write the phase's weights to ``weights/phase_<p>`` (atomically: a folder renamed into place)."""
    final = out / _WEIGHTS / f"phase_{phase}"
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    strategy.save_model(model, tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


def _row(matrix: AccuracyMatrix, row: int, task_names: list[str]) -> dict[str, float]:
    names = list(matrix.task_names)
    return {name: float(matrix.matrix[row, names.index(name)]) for name in task_names}


def _task_correct(
    strategy: Strategy, model: Any, ctx: PhaseContext, task: Task, labels: list[int]
) -> np.ndarray:
    """(n,) bool: which of ``task``'s test examples the strategy predicts right."""
    if not task.test:
        return np.zeros(0, dtype=bool)
    predicted = strategy.predict(model, ctx, [ex.text for ex in task.test])
    return np.asarray(predicted == np.asarray(labels), dtype=bool)


def _train_phase(model: Any, strategy: Strategy, ctx: PhaseContext, out: Path) -> tuple[int, int, int]:
    """Train one phase; returns (new examples, replayed examples, replayed tokens)."""
    from transformers import PrinterCallback, TrainingArguments

    config = ctx.config
    collator = strategy.collator(ctx)
    args = TrainingArguments(
        output_dir=str(out / "trainer"),
        per_device_train_batch_size=config.batch_size,
        num_train_epochs=config.epochs,
        learning_rate=config.learning_rate,
        seed=config.seed + ctx.phase,
        logging_steps=10,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        remove_unused_columns=False,
        disable_tqdm=not config.progress,
        dataloader_num_workers=0,
    )
    trainer = RehearsalTrainer(
        model=model,
        args=args,
        train_dataset=ctx.train,
        data_collator=collator,
        callbacks=strategy.callbacks(ctx, collator),
        loss=config.loss,
        current_classes=ctx.current_classes,
        seen_classes=ctx.seen_classes,
        mask_unseen=config.mask_unseen,
        loss_terms=strategy.loss_terms(ctx),
        head_learning_rate=config.head_learning_rate,
    )
    # Without progress bars the Trainer prints each log dict to stdout; stdout is the run's report (--json).
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    replayed = sum(int(log.get("replay/examples", 0)) for log in trainer.state.log_history)
    tokens = sum(int(log.get("replay/tokens", 0)) for log in trainer.state.log_history)
    if isinstance(collator, RehearsalCollator):
        rest = collator.pop_stats()
        replayed, tokens = replayed + rest.replayed, tokens + rest.replayed_tokens
    return int(len(ctx.train) * config.epochs), replayed, tokens


def run(
    config: RunConfig,
    *,
    output_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    stream: TaskStream | None = None,
    keys: KeyRing | None = None,
) -> RunResult:
    """Run (or resume) the continual fine-tuning ``config`` describes; see the module docstring.

    ``keys`` is the master key of the run's memory (default: ``REHEARSAL_MASTER_KEY``, else
    ``memory.key`` in the output folder); a method that keeps no memory needs none.
    """
    from transformers import AutoTokenizer, DataCollatorWithPadding, set_seed

    if output_dir is not None:
        config = config.replace(output_dir=str(output_dir))
    out = Path(config.output_dir)
    keys = preflight(config, output_dir=out, resume=resume, keys=keys)
    out.mkdir(parents=True, exist_ok=True)
    state = _load_state(out, config, resume=resume)
    stream = stream if stream is not None else load_stream(config)
    strategy = get_strategy(config.method)
    phases = strategy.phases(stream)
    done = int(state["completed_phases"]) if state else 0
    if state:
        matrix = AccuracyMatrix.from_dict(state["accuracy"])
        totals: dict[str, Any] = dict(state["totals"])
    else:
        matrix = AccuracyMatrix([t.name for t in stream.tasks])
        totals = {
            "wall_seconds": 0.0,
            "train_examples": 0,
            "replayed_examples": 0,
            "replayed_tokens": 0,
            "phase_seconds": [],
        }

    tokenizer = AutoTokenizer.from_pretrained(model_path(config))
    set_seed(config.seed)
    # Runs written before weights were kept per phase saved them in "checkpoint/".
    checkpoint = out / state.get("checkpoint", "checkpoint") if state and done else None
    model = strategy.load_model(config, checkpoint, len(stream.labels))
    run_id = run_id_for(_comparable(config))
    last_correct = {t: np.asarray(v, dtype=bool) for t, v in (state or {}).get("correct", {}).items()}
    if keys is not None and done < len(phases):
        _open_memory(out, keys, state, phases[done], run_id)
        if state is None:
            # From here on the run exists: a first phase that is blocked or cut short is resumed, and the
            # memory with its audit log (an approval, say) is kept rather than made afresh.
            _write_state(out, config, 0, None, matrix, {}, _memory_generation(out, keys), totals)
    base_collator = DataCollatorWithPadding(tokenizer)
    index = {task.name: i for i, task in enumerate(stream.tasks)}
    test_labels = [[stream.label_id(ex.label) for ex in task.test] for task in stream.tasks]
    from tqdm.auto import tqdm

    bar = tqdm(
        total=len(phases),
        initial=done,
        desc=f"{config.method} phases",
        disable=not config.progress,
        file=sys.stderr,
    )
    for phase in range(done, len(phases)):
        started = time.perf_counter()
        tasks = phases[phase]
        bar.set_postfix_str("+".join(t.name for t in tasks))
        seen = [stream.label_id(lab) for p in phases[: phase + 1] for t in p for lab in t.labels]
        ctx = PhaseContext(
            config=config,
            stream=stream,
            phase=phase,
            tasks=tasks,
            train=_phase_dataset(stream, tasks, tokenizer, config, with_vectors=strategy.needs_vectors),
            tokenizer=tokenizer,
            base_collator=base_collator,
            memory_path=out / _MEMORY,
            keys=keys,
            current_classes=[stream.label_id(lab) for t in tasks for lab in t.labels],
            seen_classes=sorted(set(seen)),
            output_dir=out,
        )
        set_seed(config.seed + phase)
        model = strategy.prepare_model(model, ctx)
        new, replayed, tokens = _train_phase(model, strategy, ctx, out)
        logs = strategy.after_phase(model, ctx)
        totals["phase_logs"] = [*totals.get("phase_logs", []), logs]
        row = index[tasks[-1].name]
        correct = {
            t.name: _task_correct(strategy, model, ctx, t, test_labels[j]) for j, t in enumerate(stream.tasks)
        }
        for j, task in enumerate(stream.tasks):
            matrix.record(row, j, float(correct[task.name].mean()) if len(correct[task.name]) else 0.0)
        elapsed = time.perf_counter() - started
        totals["wall_seconds"] += elapsed
        totals["train_examples"] += new
        totals["replayed_examples"] += replayed
        totals["replayed_tokens"] += tokens
        totals["phase_seconds"] = [*totals["phase_seconds"], elapsed]
        # Weights first, then state: a state file never points at weights that were not written.
        weights = _save_weights(strategy, model, out, phase)
        if keys is not None:
            trained_before = [t.name for p in phases[:phase] for t in p]
            prev = index[phases[phase - 1][-1].name] if phase else None
            govern_update(
                memory_path=out / _MEMORY,
                keys=keys,
                config=_comparable(config),
                gate=config.gate,
                run_id=run_id,
                phase=phase,
                task_names=[t.name for t in tasks],
                weights=weights,
                before={} if prev is None else _row(matrix, prev, trained_before),
                after=_row(matrix, row, [*trained_before, *(t.name for t in tasks)]),
                staged={t: (last_correct[t], correct[t]) for t in trained_before if t in last_correct},
                seed=config.seed + phase,
            )
        last_correct = correct
        generation = _memory_generation(out, keys) if keys is not None else 0
        _write_state(out, config, phase + 1, weights, matrix, correct, generation, totals)
        # Ungoverned: no version points at older weights and a resume needs only the latest; governed:
        # versions older than keep_weights give theirs up.
        keep = 1 if keys is None else config.keep_weights
        if keep is not None and phase >= keep:
            shutil.rmtree(out / _WEIGHTS / f"phase_{phase - keep}", ignore_errors=True)
        _write_outputs(_result(config, matrix, totals, out), out)
        bar.update(1)
    bar.close()
    result = _result(config, matrix, totals, out)
    _write_outputs(result, out)
    return result


def _result(config: RunConfig, matrix: AccuracyMatrix, totals: dict[str, Any], out: Path) -> RunResult:
    cost = RunCost(
        wall_seconds=float(totals["wall_seconds"]),
        train_examples=int(totals["train_examples"]),
        replayed_examples=int(totals["replayed_examples"]),
        replayed_tokens=int(totals["replayed_tokens"]),
        memory_bytes_on_disk=_folder_bytes(out / _MEMORY),
    )
    return RunResult(
        config, matrix, cost, out, list(totals["phase_seconds"]), list(totals.get("phase_logs", []))
    )


def _write_outputs(result: RunResult, out: Path) -> None:

    _write_json(out / "results.json", result.to_dict())
    (out / "results.md").write_text(result.to_markdown(), encoding="utf-8")
    title = f"{result.config.method} ({result.config.loss})"
    plot_accuracy_heatmap(result.matrix, out / "accuracy_heatmap.png", title=title)
    plot_accuracy_over_time(result.matrix, out / "accuracy_over_time.png", title=title)
