"""The continual fine-tuning run loop: train task after task through the HF Trainer, evaluate every task.

``run(config)`` trains a model phase by phase with the strategy named by ``config.method`` (see
``rehearsal.runner.strategies``), evaluates each task's test set after every phase with predictions over all
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

Each phase opens the run's memory once and hands that one handle to everything the phase does: the
dataset's vectors (from the memory's own encoder), the collator's replay, the callback's admission, the
strategy's hooks and the update's governance.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rehearsal._files import replace_folder
from rehearsal.crypto.keys import KeyRing
from rehearsal.embedding import load_encoder
from rehearsal.errors import ConfigError
from rehearsal.governance.audit_log import AuditLog, default_log_path
from rehearsal.governance.audited import AuditedMemory
from rehearsal.governance.updates import UpdateRecord, govern_update, run_id_for, update_id
from rehearsal.governance.versions import list_versions, withdraw_update
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.methods.inference import evaluate_accuracy
from rehearsal.runner import state as run_state
from rehearsal.runner.config import RunConfig
from rehearsal.runner.instructions import load_instruction_stream
from rehearsal.runner.metrics import AccuracyMatrix
from rehearsal.runner.phase import phase_context, train_phase
from rehearsal.runner.preflight import Preflight, preflight
from rehearsal.runner.results import RunResult, build_result, summarize, write_outputs
from rehearsal.runner.strategies import PhaseContext, Strategy
from rehearsal.runner.strategies.base import read_out_names
from rehearsal.runner.strategies.causal import strategy_for
from rehearsal.runner.tasks import Task, TaskStream, load_jsonl_stream, load_wordnet_stream

__all__ = ["RunResult", "evaluate_accuracy", "load_stream", "run", "summarize"]

_WEIGHTS, _MEMORY = "weights", run_state.MEMORY_DIR


def load_stream(config: RunConfig) -> TaskStream:
    """The task stream a config names: a JSON-lines file, or the bundled WordNet stream with its caps (for
    a causal LM, the bundled instruction stream)."""
    if config.model_kind == "causal-lm":
        return load_instruction_stream(
            max_train_per_class=config.max_train_per_class,
            max_test_per_class=config.max_test_per_class,
            tasks=config.tasks,
            seed=0,
        )
    if config.data is not None:
        stream = load_jsonl_stream(
            config.data,
            seed=config.seed,
            text_field=config.text_field,
            label_field=config.label_field,
            task_field=config.task_field,
        )
        return stream if config.tasks is None else TaskStream.from_tasks(stream.task(t) for t in config.tasks)
    return load_wordnet_stream(
        max_train_per_class=config.max_train_per_class,
        max_test_per_class=config.max_test_per_class,
        tasks=config.tasks,
        seed=0,
    )


@dataclass
class _Run:
    """What the phases of one run share."""

    config: RunConfig
    out: Path
    stream: TaskStream
    strategy: Strategy
    phases: list[tuple[Task, ...]]
    state: dict[str, Any] | None
    keys: KeyRing | None
    run_id: str
    matrix: AccuracyMatrix
    totals: dict[str, Any]
    last_correct: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def memory_path(self) -> Path:
        return self.out / _MEMORY

    @property
    def done(self) -> int:
        return int(self.state["completed_phases"]) if self.state else 0


def _check_not_rolled_back(r: _Run) -> None:
    """A resumed run's memory must still be at the version its last finished phase shipped: after
    ``rehearsal rollback`` the saved results describe a model and a memory that are no longer current."""
    if r.keys is None or not r.state or r.done == 0:
        return
    versions, current = list_versions(r.memory_path)
    shipped = update_id(r.run_id, r.done - 1)
    # The last finished phase's version, or one a later phase recorded before the run died (which the
    # resumed phase withdraws): anything else current means someone rolled the memory back.
    expected = {update_id(r.run_id, p) for p in range(r.done - 1, len(r.phases))}
    by_number = {v.version: v for v in versions}
    if current is None or by_number[current].update in expected or all(v.update != shipped for v in versions):
        return  # current as the state says, or a run older than versioned phases: nothing to compare
    now = by_number[current]
    raise ConfigError(
        f"the memory of {str(r.out)!r} was rolled back to v{current} ({now.update or 'not from this run'}) "
        f"after this run finished phase {r.done - 1}; --resume would report results the memory no longer "
        f"matches. Start the run again in a new output folder; v{current}'s weights are {now.weights}"
    )


def _start(config: RunConfig, out: Path, stream: TaskStream | None, checked: Preflight) -> _Run:
    state = checked.state
    stream = stream if stream is not None else load_stream(config)
    strategy = strategy_for(config)
    if state:
        matrix = AccuracyMatrix.from_dict(state["accuracy"])
        totals: dict[str, Any] = dict(state["totals"])
    else:
        matrix = AccuracyMatrix([t.name for t in stream.tasks])
        totals = {"wall_seconds": 0.0, "train_examples": 0, "replayed_examples": 0, "replayed_tokens": 0}
        totals["phase_seconds"] = []
    return _Run(
        config=config,
        out=out,
        stream=stream,
        strategy=strategy,
        phases=strategy.phases(stream),
        state=state,
        keys=checked.keys,
        run_id=run_id_for(run_state.comparable(config)),
        matrix=matrix,
        totals=totals,
        last_correct={t: np.asarray(v, dtype=bool) for t, v in (state or {}).get("correct", {}).items()},
    )


@contextmanager
def _phase_memory(r: _Run, phase: int) -> Iterator[RehearsalMemory | None]:
    """The phase's one memory handle (None for a method without a memory), closed when the phase ends.

    The run's first phase creates the memory; the first phase of a resumed run drops what the interrupted
    phase admitted before its state was saved. Both go through the memory's audit log: a new memory gets
    its baseline entry, a resumed one first logs what the interrupted phase changed
    (``AuditedMemory.reconcile``), then the removal of its entries.
    """
    if r.keys is None:
        yield None
        return
    resuming = r.state is not None and phase == r.done
    if r.state is None and phase == 0:
        # A fresh run: nothing of an earlier attempt can be in its state, so it starts from nothing.
        shutil.rmtree(r.memory_path, ignore_errors=True)
        memory = RehearsalMemory.create(
            r.memory_path,
            keys=r.keys,
            encoder=load_encoder(backend=r.config.encoder_backend),
            embedding_only=not r.strategy.stores_text,
        )
    else:
        memory = RehearsalMemory.open(r.memory_path, keys=r.keys)
    with memory:
        if phase == r.done:
            log = AuditLog.open(default_log_path(r.memory_path), r.keys)
            if resuming:
                # A version recorded for the pending phase by a run that died before saving its state is
                # not one.
                withdraw_update(r.memory_path, update_id(r.run_id, phase), log=log, actor=r.run_id)
            audited = AuditedMemory(memory, log, actor=r.run_id)
            if resuming and r.state is not None and memory.generation != r.state["memory_generation"]:
                stale = memory.ids({"task": {"$in": [t.name for t in r.phases[phase]]}})
                if stale:
                    audited.delete(stale)
            if r.state is None:
                # From here on the run exists: a first phase that is blocked or cut short is resumed, and
                # the memory with its audit log (an approval, say) is kept rather than made afresh.
                _write_state(r, 0, None, {}, memory.generation)
        yield memory


def _write_state(
    r: _Run, completed: int, weights: Path | None, correct: dict[str, np.ndarray], generation: int
) -> None:
    run_state.write_state(
        r.out, r.config, completed, weights, r.matrix, correct, generation, r.totals, keys=r.keys
    )


def _save_weights(strategy: Strategy, model: Any, out: Path, phase: int, keys: KeyRing | None) -> Path:
    """Write the phase's weights to ``weights/phase_<p>`` (atomically: a folder renamed into place), with
    the predictors over the memory fitted after it in ``predictor/<name>/`` (sealed under the run's key)."""
    from rehearsal.methods.predictors import save_predictor

    final = out / _WEIGHTS / f"phase_{phase}"
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    strategy.save_model(model, tmp)
    for name, predictor in strategy.predictors.items():
        save_predictor(predictor, tmp / "predictor" / name, keys=keys)
    replace_folder(tmp, final)
    return final


def _row(matrix: AccuracyMatrix, row: int, task_names: list[str]) -> dict[str, float]:
    names = list(matrix.task_names)
    return {name: float(matrix.matrix[row, names.index(name)]) for name in task_names}


def _task_correct(strategy: Strategy, model: Any, ctx: PhaseContext, task: Task) -> dict[str, np.ndarray]:
    """Per read-out (the head, and the run's predictor when it has one): how right each of ``task``'s test
    examples comes out, as (n,) float in [0, 1] (``Strategy.score``: 1.0 or 0.0 for a predicted label)."""
    return strategy.score(model, ctx, task)


def _train_phase(model: Any, strategy: Strategy, ctx: PhaseContext, out: Path) -> tuple[int, int, int]:
    """Train one phase; returns (new examples, replayed examples, replayed tokens)."""
    return train_phase(model, strategy, ctx, out)


def _evaluate(r: _Run, model: Any, ctx: PhaseContext, row: int) -> dict[str, np.ndarray]:
    """Every task's test set after the phase: the run's prediction recorded in the matrix's ``row``, every
    other read-out of the same weights (the head, when the run predicts through the memory, and the
    config's ``readouts``) in ``totals["readouts"]``; per-example results of the run's prediction back."""
    stream = r.stream
    prediction = r.config.prediction
    saved = r.totals.get("readouts", {})
    others = {
        name: AccuracyMatrix.from_dict(saved[name])
        if name in saved
        else AccuracyMatrix(list(r.matrix.task_names))
        for name in read_out_names(r.config)
        if name != prediction
    }
    correct = {}
    for j, task in enumerate(stream.tasks):
        every = _task_correct(r.strategy, model, ctx, task)
        scores = every[prediction]
        correct[task.name] = np.asarray(scores >= 1.0, dtype=bool)  # full marks: the label, or all the answer
        r.matrix.record(row, j, float(scores.mean()) if len(scores) else 0.0)
        for name, matrix in others.items():
            matrix.record(row, j, float(every[name].mean()) if len(every[name]) else 0.0)
    if others:
        r.totals["readouts"] = {name: matrix.to_dict() for name, matrix in others.items()}
    return correct


def _govern(
    r: _Run, memory: RehearsalMemory, phase: int, row: int, weights: Path, correct: dict[str, np.ndarray]
) -> None:
    """Gate, version and audit the phase's update (a method with a memory only)."""
    assert r.keys is not None  # INVARIANT: a run with a memory has its key
    tasks = r.phases[phase]
    index = {task.name: i for i, task in enumerate(r.stream.tasks)}
    trained_before = [t.name for p in r.phases[:phase] for t in p]
    prev = index[r.phases[phase - 1][-1].name] if phase else None
    update = UpdateRecord(
        id=update_id(r.run_id, phase),
        actor=r.run_id,
        config=run_state.comparable(r.config),
        task_names=[t.name for t in tasks],
        weights=weights,
        before={} if prev is None else _row(r.matrix, prev, trained_before),
        after=_row(r.matrix, row, [*trained_before, *(t.name for t in tasks)]),
        staged={t: (r.last_correct[t], correct[t]) for t in trained_before if t in r.last_correct},
        seed=r.config.seed + phase,
    )
    log = AuditLog.open(default_log_path(r.memory_path), r.keys)
    govern_update(update, memory=memory, log=log, keys=r.keys, gate=r.config.gate)


def _run_phase(r: _Run, phase: int, model: Any, tokenizer: Any, base_collator: Any) -> Any:
    """One phase: train, calibrate, evaluate, save, govern; returns the model for the next phase."""
    from transformers import set_seed

    started = time.perf_counter()
    with _phase_memory(r, phase) as memory:
        ctx = phase_context(
            r.config,
            r.stream,
            r.phases,
            phase,
            tokenizer,
            base_collator,
            memory,
            r.keys,
            r.out,
            with_vectors=r.strategy.needs_vectors,
        )
        set_seed(r.config.seed + phase)
        model = r.strategy.prepare_model(model, ctx)
        new, replayed, tokens = _train_phase(model, r.strategy, ctx, r.out)
        r.totals["phase_logs"] = [*r.totals.get("phase_logs", []), r.strategy.after_phase(model, ctx)]
        row = [t.name for t in r.stream.tasks].index(r.phases[phase][-1].name)
        correct = _evaluate(r, model, ctx, row)
        elapsed = time.perf_counter() - started
        r.totals["wall_seconds"] += elapsed
        r.totals["train_examples"] += new
        r.totals["replayed_examples"] += replayed
        r.totals["replayed_tokens"] += tokens
        r.totals["phase_seconds"] = [*r.totals["phase_seconds"], elapsed]
        # Weights first, then state: a state file never points at weights that were not written.
        weights = _save_weights(r.strategy, model, r.out, phase, r.keys)
        if memory is not None:
            _govern(r, memory, phase, row, weights, correct)
        r.last_correct = correct
        _write_state(r, phase + 1, weights, correct, memory.generation if memory is not None else 0)
    # Ungoverned: no version points at older weights and a resume needs only the latest; governed:
    # versions older than keep_weights give theirs up.
    keep = 1 if r.keys is None else r.config.keep_weights
    if keep is not None and phase >= keep:
        shutil.rmtree(r.out / _WEIGHTS / f"phase_{phase - keep}", ignore_errors=True)
    write_outputs(build_result(r.config, r.matrix, r.totals, r.out, r.memory_path), r.out)
    return model


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
    ``memory.key`` in the output folder); a method that keeps no memory needs none. With
    ``config.online`` the stream is seen once, batch by batch (``rehearsal.runner.online``).
    """
    from tqdm.auto import tqdm
    from transformers import set_seed
    from transformers.utils import logging as hf_logging

    if output_dir is not None:
        config = config.replace(output_dir=str(output_dir))
    out = Path(config.output_dir)
    checked = preflight(config, output_dir=out, resume=resume, keys=keys)
    # Read before the folder is made: a bad row must fail the run without leaving a run folder behind.
    stream = stream if stream is not None else load_stream(config)
    out.mkdir(parents=True, exist_ok=True)
    if config.online:
        from rehearsal.runner.online import run_online

        return run_online(config, out=out, stream=stream, state=checked.state, keys=checked.keys)
    r = _start(config, out, stream, checked)
    _check_not_rolled_back(r)
    tokenizer = r.strategy.load_tokenizer(config)
    set_seed(config.seed)
    # Runs written before weights were kept per phase saved them in "checkpoint/".
    checkpoint = out / r.state.get("checkpoint", "checkpoint") if r.state and r.done else None
    model = r.strategy.load_model(config, checkpoint, len(r.stream.labels))
    base_collator = r.strategy.base_collator(tokenizer, config)
    desc = f"{config.method} phases"
    # A bar over the phases only beside the libraries' own bars (--verbose); otherwise each phase prints
    # one line when it ends (rehearsal.runner.phase).
    shown = config.progress and hf_logging.is_progress_bar_enabled()
    bar = tqdm(total=len(r.phases), initial=r.done, desc=desc, disable=not shown, file=sys.stderr)
    for phase in range(r.done, len(r.phases)):
        bar.set_postfix_str("+".join(t.name for t in r.phases[phase]))
        model = _run_phase(r, phase, model, tokenizer, base_collator)
        bar.update(1)
    bar.close()
    result = build_result(config, r.matrix, r.totals, out, r.memory_path)
    write_outputs(result, out)
    return result
