"""One phase of a run as the Trainer sees it: the phase's dataset and context, and the training itself."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from rehearsal.arithmetic import wants_bf16
from rehearsal.crypto.keys import KeyRing
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.methods.inference import embed_texts
from rehearsal.replay.collator import RehearsalCollator
from rehearsal.replay.generative import GenerativeCollator
from rehearsal.runner.anytime_probe import offline_probes
from rehearsal.runner.config import RunConfig
from rehearsal.runner.state import run_memory
from rehearsal.runner.strategies import PhaseContext, Strategy
from rehearsal.runner.tasks import Task, TaskStream
from rehearsal.training.dataset import training_set, vector_rows
from rehearsal.training.trainer import TrainSettings, train

__all__ = ["phase_context", "phase_dataset", "train_phase"]


def phase_dataset(
    stream: TaskStream,
    tasks: tuple[Task, ...],
    tokenizer: Any,
    config: RunConfig,
    *,
    vectors_from: RehearsalMemory | None,
) -> Any:
    """The phase's tokenized training set; given a memory, also its texts, tasks and vectors (embedded once,
    by that memory's own encoder) for the collator and the admission callback."""
    examples = [ex for task in tasks for ex in task.train]
    texts = [ex.text for ex in examples]
    columns: dict[str, list[Any]] = {}
    if vectors_from is not None:
        columns[config.replay.text_column] = texts
        columns["task"] = [ex.task for ex in examples]
        columns[config.replay.vector_column] = vector_rows(embed_texts(texts, vectors_from.encoder))
    labels = [stream.label_id(ex.label) for ex in examples]
    return training_set(tokenizer, texts, labels, max_length=config.max_length, columns=columns)


def phase_context(
    config: RunConfig,
    stream: TaskStream,
    phases: list[tuple[Task, ...]],
    phase: int,
    tokenizer: Any,
    base_collator: Any,
    memory: RehearsalMemory | None,
    keys: KeyRing | None,
    out: Path,
    *,
    with_vectors: bool,
) -> PhaseContext:
    tasks = phases[phase]
    seen = [stream.label_id(lab) for p in phases[: phase + 1] for t in p for lab in t.labels]
    return PhaseContext(
        config=config,
        stream=stream,
        phase=phase,
        tasks=tasks,
        train=phase_dataset(stream, tasks, tokenizer, config, vectors_from=memory if with_vectors else None),
        tokenizer=tokenizer,
        base_collator=base_collator,
        memory_path=run_memory(out),
        keys=keys,
        current_classes=[stream.label_id(lab) for t in tasks for lab in t.labels],
        seen_classes=sorted(set(seen)),
        output_dir=out,
        memory=memory,
    )


def train_phase(model: Any, strategy: Strategy, ctx: PhaseContext, out: Path) -> tuple[int, int, int]:
    """Train one phase; returns (new examples, replayed examples, replayed tokens)."""
    from transformers.utils import logging as hf_logging

    config = ctx.config
    collator = strategy.collator(ctx)
    probes = offline_probes(ctx)
    settings = TrainSettings(
        batch_size=config.batch_size,
        epochs=config.epochs,
        learning_rate=config.learning_rate,
        seed=config.seed + ctx.phase,
        loss=config.loss,
        mask_unseen=config.mask_unseen,
        head_learning_rate=config.head_learning_rate,
        length_buckets=config.length_buckets,
        bf16=wants_bf16(config.bf16_training),
        logging_steps=10,
        # The Trainer's own bars nest inside the run's; they show only when the libraries' progress bars are
        # on (``rehearsal run --verbose``; the CLI turns them off, and prints one line per phase instead).
        progress_bars=config.progress and hf_logging.is_progress_bar_enabled(),
    )
    started = time.perf_counter()
    trainer = train(
        model,
        settings,
        output_dir=out / "trainer",
        dataset=ctx.train,
        collator=collator,
        callbacks=[*strategy.callbacks(ctx, collator), *([probes.callback] if probes else [])],
        current_classes=ctx.current_classes,
        seen_classes=ctx.seen_classes,
        loss_terms=strategy.loss_terms(ctx),
    )
    seconds = time.perf_counter() - started
    if probes is not None:
        probes.finish()
    replayed = sum(int(log.get("replay/examples", 0)) for log in trainer.state.log_history)
    tokens = sum(int(log.get("replay/tokens", 0)) for log in trainer.state.log_history)
    if isinstance(collator, (RehearsalCollator, GenerativeCollator)):
        rest = collator.pop_stats()
        replayed, tokens = replayed + rest.replayed, tokens + rest.replayed_tokens
    if config.progress:
        loss = next((h["train_loss"] for h in reversed(trainer.state.log_history) if "train_loss" in h), None)
        names = "+".join(t.name for t in ctx.tasks)
        shown = "-" if loss is None else f"{loss:.3f}"
        sys.stderr.write(
            f"phase {ctx.phase + 1} ({names}): loss {shown}, replayed {replayed}, {seconds:.0f} s\n"
        )
    return int(len(ctx.train) * config.epochs), replayed, tokens
