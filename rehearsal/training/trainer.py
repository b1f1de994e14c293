"""One pass of the HF Trainer as a run's phase and a deployment's update both take it.

The caller brings what differs (the dataset, the collator that mixes in replay, the loss terms, the
classes seen so far); the arguments that must not differ live here: CPU, no checkpoints, no reporting,
the dataset's extra columns kept for the collator, no worker processes (the collator holds a memory
handle), and the Trainer's own printing off, because stdout is the caller's report (``--json``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rehearsal.replay.trainer import LossTerm, RehearsalTrainer

__all__ = ["TrainSettings", "train"]


@dataclass(frozen=True)
class TrainSettings:
    """How one pass trains: the optimiser's numbers, the loss and what the Trainer shows."""

    batch_size: int
    epochs: float
    learning_rate: float
    seed: int
    loss: str = "ce"
    mask_unseen: bool = True
    head_learning_rate: float | None = None  # None: the model's learning rate for the head too
    length_buckets: int = 2  # forward passes per batch over rows of similar length (methods.length_buckets)
    bf16: bool = False  # each step's forward under bf16 autocast; weights and optimiser stay fp32
    logging_steps: int | None = None  # None: no logs (the caller reads none back)
    progress_bars: bool = False


def train(
    model: Any,
    settings: TrainSettings,
    *,
    output_dir: str | Path,
    dataset: Any,
    collator: Any,
    seen_classes: Sequence[int],
    current_classes: Sequence[int] | None = None,
    callbacks: Sequence[Any] = (),
    loss_terms: Sequence[LossTerm] = (),
) -> RehearsalTrainer:
    """Train ``model`` in place for one pass over ``dataset``; returns the trainer (its ``state`` holds
    the log history)."""
    from transformers import PrinterCallback, TrainingArguments

    logging: dict[str, Any] = (
        {"logging_strategy": "no"}
        if settings.logging_steps is None
        else {"logging_steps": settings.logging_steps}
    )
    args = TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=settings.batch_size,
        num_train_epochs=settings.epochs,
        learning_rate=settings.learning_rate,
        seed=settings.seed,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        remove_unused_columns=False,
        disable_tqdm=not settings.progress_bars,
        dataloader_num_workers=0,
        **logging,
    )
    trainer = RehearsalTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=collator,
        callbacks=list(callbacks),
        loss=settings.loss,
        current_classes=current_classes,
        seen_classes=seen_classes,
        mask_unseen=settings.mask_unseen,
        loss_terms=list(loss_terms),
        head_learning_rate=settings.head_learning_rate,
        length_buckets=settings.length_buckets,
        bf16_autocast=settings.bf16,
    )
    # Without progress bars the Trainer prints each log dict to stdout, which is the caller's report.
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    return trainer
