"""The online loop: the stream seen once, in small batches, each tested before it is trained on.

``rehearsal run`` with ``online = true`` (or :func:`run_online`) takes the stream's batches in arrival order
(``rehearsal.runner.online_stream``) and for each one, in this order:

1. probes every seen task's small fixed probe set, when ``streaming.probe_every`` steps have passed or a
   new task begins (the evaluator knows task boundaries; the learner is never told);
2. predicts the batch: online accuracy counts these predictions, made before any training on it;
3. trains one step on it topped up with replay from the memory (the method's replay mode, through the same
   :class:`~rehearsal.replay.collator.RehearsalCollator` as offline runs), at a constant learning rate
   (re-warmed when ``streaming.rewarmup_threshold`` sees a novelty jump), gradients clipped to
   ``streaming.clip_norm``; the loss's "current classes" are the batch's own classes;
4. offers the batch to the admission policy (``policy``, ``memory_capacity``), so the memory grows batch
   by batch and replay only ever draws from batches before the current one.

After a task's last batch every task's full test set is evaluated (a row of the accuracy matrix, as in an
offline run). The run writes what an offline run writes plus ``anytime`` figures in ``results.json``
(``rehearsal.runner.anytime``) and ``accuracy_anytime.png``; it checkpoints every
``streaming.checkpoint_every`` steps (``rehearsal.runner.online_checkpoint``) and ``--resume`` goes on from
the last checkpoint with the same figures.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from rehearsal.crypto.keys import KeyRing
from rehearsal.embedding import load_encoder
from rehearsal.errors import ConfigError
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.memory.policies import AdmissionPolicy, make_policy
from rehearsal.methods.inference import embed_texts, predict_labels
from rehearsal.methods.novelty import novelty
from rehearsal.replay.collator import REPLAY_FLAG, RehearsalCollator
from rehearsal.replay.trainer import LABELS
from rehearsal.runner.anytime import ProbeTrace, anytime_summary
from rehearsal.runner.anytime_probe import probe_seen_tasks
from rehearsal.runner.config import RunConfig
from rehearsal.runner.metrics import AccuracyMatrix
from rehearsal.runner.online_checkpoint import Progress, load_optimizer, save_checkpoint
from rehearsal.runner.online_predict import OnlinePredictor
from rehearsal.runner.online_report import OnlineResult, write_online_outputs
from rehearsal.runner.online_stream import OnlineBatch, probe_sets, stream_batches
from rehearsal.runner.state import run_memory
from rehearsal.runner.strategies import Strategy, get_strategy
from rehearsal.runner.strategies.base import model_path
from rehearsal.runner.strategies.replay import ReplayStrategy
from rehearsal.runner.tasks import TaskStream

__all__ = ["OnlineResult", "run_online"]


@dataclasses.dataclass
class _Online:
    """What the steps of one online run share."""

    config: RunConfig
    out: Path
    stream: TaskStream
    strategy: Strategy
    batches: list[OnlineBatch]
    model: Any
    tokenizer: Any
    optimizer: Any
    collator: Any
    memory: RehearsalMemory | None
    policy: AdmissionPolicy
    vectors: dict[int, np.ndarray]  # batch index -> (b, dim) memory-encoder vectors of its texts
    probes: dict[str, tuple[list[str], list[int]]]
    progress: Progress
    trace: ProbeTrace
    matrix: AccuracyMatrix
    totals: dict[str, Any]
    wall_before: float  # wall seconds of the run before this process took it over
    keys: KeyRing | None  # the memory's master key, which seals the run's state (None: no memory)
    predictor: OnlinePredictor | None = None  # prediction through the memory (None: the head answers)
    started: float = dataclasses.field(default_factory=time.perf_counter)

    def wall(self) -> float:
        return self.wall_before + time.perf_counter() - self.started

    def labels(self, batch: OnlineBatch) -> list[int]:
        return [self.stream.label_id(ex.label) for ex in batch.examples]


def _predict(o: _Online, texts: list[str]) -> np.ndarray:
    c = o.config

    def head() -> np.ndarray:
        return predict_labels(
            o.model, o.tokenizer, texts, batch_size=c.eval_batch_size, max_length=c.max_length
        )

    if o.predictor is None:
        return head()
    return o.predictor.predict(o.model, o.tokenizer, o.progress.step, texts, head)


def _test_batch(o: _Online, batch: OnlineBatch) -> None:
    """Predict the batch before any training on it; count what it got right."""
    right = int(np.sum(_predict(o, batch.texts) == np.asarray(o.labels(batch))))
    p = o.progress
    p.correct += right
    p.tested += len(batch.examples)
    counts = p.per_task.setdefault(batch.task, [0, 0])
    counts[0] += right
    counts[1] += len(batch.examples)


def _probe(o: _Online, step: int) -> None:
    """Probe accuracy of every task whose first batch was trained on before ``step``."""
    o.progress.probe_seconds += probe_seen_tasks(o.trace, step, o.probes, lambda texts: _predict(o, texts))


def _features(o: _Online, batch: OnlineBatch) -> list[dict[str, Any]]:
    c = o.config
    encoded = o.tokenizer(batch.texts, truncation=True, max_length=c.max_length)
    rows: list[dict[str, Any]] = []
    for i, (example, label) in enumerate(zip(batch.examples, o.labels(batch), strict=True)):
        row = {k: v[i] for k, v in encoded.items()}
        row[LABELS] = label
        if o.memory is not None:
            row[c.replay.text_column] = example.text
            row[c.replay.vector_column] = o.vectors[batch.index][i].tolist()
            row["task"] = example.task
        rows.append(row)
    return rows


def _learning_rate_scale(o: _Online) -> float:
    step = o.progress.warmup_step
    return 1.0 if step is None else min(1.0, (step + 1) / o.config.streaming.rewarmup_steps)


def _train_step(o: _Online, batch: OnlineBatch) -> None:
    """One optimizer step on the batch plus its replay."""
    import torch

    from rehearsal.replay.trainer import rehearsal_loss

    c = o.config
    inputs = dict(o.collator(_features(o, batch)))
    o.model.train()
    is_replay = inputs.pop(REPLAY_FLAG, None)
    labels = inputs.pop(LABELS)
    logits = o.model(**inputs).logits
    loss = rehearsal_loss(
        logits,
        labels,
        is_replay,
        loss=c.loss,
        current_classes=sorted(set(o.labels(batch))),
        seen_classes=o.progress.seen_classes,
        mask_unseen=c.mask_unseen,
    )
    loss.backward()  # type: ignore[no-untyped-call]
    if c.streaming.clip_norm is not None:
        torch.nn.utils.clip_grad_norm_(o.model.parameters(), float(c.streaming.clip_norm))
    scale = _learning_rate_scale(o)
    for group in o.optimizer.param_groups:
        group["lr"] = group["base_lr"] * scale
    o.optimizer.step()
    o.optimizer.zero_grad(set_to_none=True)
    if isinstance(o.collator, RehearsalCollator):
        stats = o.collator.pop_stats()
        o.totals["replayed_examples"] += stats.replayed
        o.totals["replayed_tokens"] += stats.replayed_tokens
    o.totals["train_examples"] += len(batch.examples)


def _admit(o: _Online, batch: OnlineBatch) -> list[int]:
    """Offer the batch to the admission policy (seeded by the batch, so a rebuild admits the same)."""
    if o.memory is None:
        return []
    metadata = [{"task": ex.task, "label": y} for ex, y in zip(batch.examples, o.labels(batch), strict=True)]
    return o.memory.admit(
        batch.texts,
        policy=o.policy,
        rng=np.random.default_rng([o.config.seed, batch.index, 3]),
        metadata=metadata,
        vectors=o.vectors[batch.index],
    )


def _maybe_rewarm(o: _Online, batch: OnlineBatch) -> None:
    """Restart the learning-rate warm-up when the batch is novel against the memory."""
    p, s = o.progress, o.config.streaming
    if p.warmup_step is not None:
        p.warmup_step = None if p.warmup_step + 1 >= s.rewarmup_steps else p.warmup_step + 1
    if s.rewarmup_threshold is None or o.memory is None or len(o.memory) < 2:
        return
    rng = np.random.default_rng([o.config.seed, batch.index, 4])
    score = novelty(
        o.memory,
        o.vectors[batch.index],
        threshold=s.rewarmup_threshold,
        calibration_size=s.novelty_calibration,
        rng=rng,
    )
    if score.novel:
        p.warmup_step = 0
        p.rewarmups.append(batch.index)


def _end_of_task(o: _Online, batch: OnlineBatch) -> None:
    """Every task's full test set after a task's last batch: a row of the accuracy matrix."""
    began = time.perf_counter()
    row = [t.name for t in o.stream.tasks].index(batch.task)
    for j, task in enumerate(o.stream.tasks):
        labels = np.asarray([o.stream.label_id(ex.label) for ex in task.test])
        predicted = _predict(o, [ex.text for ex in task.test]) if len(labels) else labels
        o.matrix.record(row, j, float(np.mean(predicted == labels)) if len(labels) else 0.0)
    o.progress.eval_seconds += time.perf_counter() - began
    o.totals["phase_seconds"] = [*o.totals["phase_seconds"], o.wall() - sum(o.totals["phase_seconds"])]


def _step(o: _Online, batch: OnlineBatch) -> None:
    """Probe (on cadence), test, train, admit: one batch of the stream."""
    p, every = o.progress, o.config.streaming.probe_every
    if batch.first_of_task:
        o.trace.start_task(batch.task, batch.index)
    if o.predictor is not None:  # a refit is the step's prediction cost, not its probe's
        o.predictor.refresh(o.model, o.tokenizer, batch.index)
    if batch.first_of_task or (batch.index > 0 and batch.index % every == 0):
        _probe(o, batch.index)
    _test_batch(o, batch)
    p.seen_classes = sorted(set(p.seen_classes) | set(o.labels(batch)))
    _maybe_rewarm(o, batch)
    _train_step(o, batch)
    _admit(o, batch)
    p.step = batch.index + 1
    if batch.last_of_task:
        _end_of_task(o, batch)


def _checkpoint(o: _Online) -> None:
    o.totals["wall_seconds"] = o.wall()
    save_checkpoint(
        out=o.out,
        config=o.config,
        strategy=o.strategy,
        model=o.model,
        optimizer=o.optimizer,
        progress=o.progress,
        trace=o.trace,
        matrix=o.matrix,
        totals=o.totals,
        generation=o.memory.generation if o.memory is not None else 0,
        keys=o.keys,
    )


def _optimizer(model: Any, config: RunConfig) -> Any:
    """AdamW at a constant rate (the head on ``head_learning_rate`` when set); ``base_lr`` per group is
    the rate the re-warmup scales."""
    import torch

    from rehearsal.methods.calibration import classification_head

    head = {id(p) for p in classification_head(model).parameters()}
    params = [p for p in model.parameters() if p.requires_grad]
    head_rate = config.head_learning_rate or config.learning_rate
    groups = [
        {"params": [p for p in params if id(p) not in head], "lr": config.learning_rate},
        {"params": [p for p in params if id(p) in head], "lr": head_rate},
    ]
    # fused: one pass over all parameters (on a CPU a fifth of the per-parameter loop's time; issue 30)
    optimizer = torch.optim.AdamW(groups, lr=config.learning_rate, weight_decay=0.0, fused=True)
    for group in optimizer.param_groups:
        group["base_lr"] = group["lr"]
    return optimizer


def _open_memory(
    config: RunConfig, out: Path, strategy: Strategy, keys: KeyRing | None
) -> RehearsalMemory | None:
    """A fresh memory for the run (a resumed run rebuilds its memory from the batches before it)."""
    if not strategy.uses_memory or keys is None:
        return None
    path = run_memory(out)
    shutil.rmtree(path, ignore_errors=True)
    return RehearsalMemory.create(
        path,
        keys=keys,
        encoder=load_encoder(backend=config.encoder_backend),
        embedding_only=not strategy.stores_text,
    )


def _collator(config: RunConfig, strategy: Strategy, memory: RehearsalMemory | None, tokenizer: Any) -> Any:
    from transformers import DataCollatorWithPadding

    base = DataCollatorWithPadding(tokenizer)
    if memory is None or not isinstance(strategy, ReplayStrategy):
        return base
    replay = dataclasses.replace(
        config.replay,
        mode=strategy.mode,
        mark_replay=True,
        max_length=config.max_length,
        label_column=LABELS,
        seed=config.seed,
    )
    # Every entry is eligible: the memory only holds batches that came before the one being trained.
    return RehearsalCollator(memory, base, tokenizer, replay)


def _setup(
    config: RunConfig, out: Path, stream: TaskStream, state: dict[str, Any] | None, keys: KeyRing | None
) -> _Online:
    from transformers import AutoTokenizer, set_seed

    strategy = get_strategy(config.method)
    set_seed(config.seed)
    checkpoint = out / state["checkpoint"] if state else None
    model = strategy.load_model(config, checkpoint, len(stream.labels))
    tokenizer = AutoTokenizer.from_pretrained(model_path(config))
    optimizer = _optimizer(model, config)
    memory = _open_memory(config, out, strategy, keys)
    batches = stream_batches(stream, config.streaming.batch_size, seed=config.seed)
    vectors: dict[int, np.ndarray] = {}
    if memory is not None:
        every = embed_texts([t for b in batches for t in b.texts], memory.encoder)
        at = 0
        for b in batches:
            vectors[b.index] = np.asarray(every[at : at + len(b.examples)], dtype=np.float32)
            at += len(b.examples)
    names = [t.name for t in stream.tasks]
    o = _Online(
        config=config,
        out=out,
        stream=stream,
        strategy=strategy,
        batches=batches,
        model=model,
        tokenizer=tokenizer,
        optimizer=optimizer,
        collator=_collator(config, strategy, memory, tokenizer),
        memory=memory,
        policy=make_policy(config.policy, config.memory_capacity),
        vectors=vectors,
        probes=probe_sets(stream, config.streaming.probe_per_class),
        progress=Progress(),
        trace=ProbeTrace(names),
        matrix=AccuracyMatrix(names),
        totals={
            "wall_seconds": 0.0,
            "train_examples": 0,
            "replayed_examples": 0,
            "replayed_tokens": 0,
            "phase_seconds": [],
        },
        wall_before=0.0,
        keys=keys,
        predictor=None if config.prediction == "head" or memory is None else OnlinePredictor(config, memory),
    )
    if state:
        _restore(o, state, checkpoint)
    return o


def _restore(o: _Online, state: dict[str, Any], checkpoint: Path | None) -> None:
    """Counters, trace and optimizer from the checkpoint; the memory rebuilt from the batches before it."""
    o.progress = Progress.from_dict(state["online"]["progress"])
    o.trace = ProbeTrace.from_dict(state["online"]["trace"])
    o.matrix = AccuracyMatrix.from_dict(state["accuracy"])
    o.totals = dict(state["totals"])
    o.wall_before = float(o.totals["wall_seconds"])
    for batch in o.batches[: o.progress.step]:
        _admit(o, batch)
    if checkpoint is not None:
        load_optimizer(checkpoint, o.optimizer)


def run_online(
    config: RunConfig, *, out: Path, stream: TaskStream, state: dict[str, Any] | None, keys: KeyRing | None
) -> OnlineResult:
    """Run (or go on with, from ``state``) the online run ``config`` describes; see the module docstring.
    ``state`` and ``keys`` come from the run's preflight (``rehearsal.runner.preflight``)."""
    kind = getattr(config, "model_kind", "classifier")
    if kind != "classifier":
        raise ConfigError(f"an online run trains a sequence classifier; model_kind {kind!r} is not one")
    o = _setup(config, out, stream, state, keys)
    try:
        every = config.streaming.checkpoint_every
        for batch in o.batches[o.progress.step :]:
            _step(o, batch)
            if o.progress.step % every == 0 and o.progress.step < len(o.batches):
                _checkpoint(o)
        n = len(o.batches)
        if not o.trace.steps or o.trace.steps[-1] != n:
            _probe(o, n)
        _checkpoint(o)
        result = _result(o)
        write_online_outputs(result, out)
        return result
    finally:
        if o.memory is not None:
            o.memory.close()


def _result(o: _Online) -> OnlineResult:
    p = o.progress
    anytime = anytime_summary(
        o.trace,
        correct=p.correct,
        tested=p.tested,
        last_step=len(o.batches),
        probe_seconds=p.probe_seconds,
        wall_seconds=float(o.totals["wall_seconds"]),
    )
    anytime["eval_seconds"] = p.eval_seconds
    anytime["per_task_online_accuracy"] = {t: c / n if n else None for t, (c, n) in p.per_task.items()}
    anytime["rewarmups"] = list(p.rewarmups)
    anytime["predictor_fits"] = o.predictor.fits if o.predictor is not None else 0
    anytime["trace"] = o.trace.to_dict()
    return OnlineResult.build(o.config, o.matrix, o.totals, o.out, anytime)
