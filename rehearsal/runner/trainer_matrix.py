"""The run's accuracy matrix for a Trainer script: one callback, shared by the Trainers of every task.

    matrix = rh.AccuracyMatrixCallback({"living": (texts, labels), "verbs": ...}, tokenizer)
    for task in tasks:                                   # in the order the test sets were given
        RehearsalTrainer(..., callbacks=[replay_callback, matrix]).train()
    matrix.matrix.summary()                              # ACC, BWT, forgetting, as `rehearsal run` reports

When a Trainer's training ends, the callback evaluates the model on every task's test set (argmax over
every class of the head, as the run's head evaluation does) and fills the matrix's row of the task just
trained: the first training fills the first task's row, the next the second, unless ``task`` names it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from rehearsal.errors import ConfigError, ValidationError
from rehearsal.methods.inference import evaluate_accuracy
from rehearsal.runner.metrics import AccuracyMatrix

__all__ = ["AccuracyMatrixCallback"]


class AccuracyMatrixCallback(TrainerCallback):
    """Fills an :class:`~rehearsal.runner.metrics.AccuracyMatrix` a row per Trainer run (main process)."""

    def __init__(
        self,
        test_sets: Mapping[str, tuple[Sequence[str], Sequence[int]]],
        tokenizer: Any,
        *,
        batch_size: int = 64,
        max_length: int = 128,
    ) -> None:
        """``test_sets`` maps each task, in training order, to its test (texts, class ids)."""
        for name, pair in test_sets.items():
            if not isinstance(pair, tuple) or len(pair) != 2 or len(pair[0]) != len(pair[1]):
                raise ValidationError(f"test set {name!r} must be (texts, labels) of equal length")
        self.matrix = AccuracyMatrix(list(test_sets))
        self.test_sets = dict(test_sets)
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = max_length
        self.task: str | None = None  # the task the next training is; None: the next in order
        self._rows = 0

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        model = kwargs.get("model")
        if model is None:
            raise ConfigError("AccuracyMatrixCallback needs the Trainer's model at the end of training")
        names = self.matrix.task_names
        after = self.task if self.task is not None else names[min(self._rows, len(names) - 1)]
        if state.is_world_process_zero:
            for name, (texts, labels) in self.test_sets.items():
                accuracy = evaluate_accuracy(
                    model,
                    self.tokenizer,
                    texts,
                    labels,
                    batch_size=self.batch_size,
                    max_length=self.max_length,
                )
                self.matrix.record(after, name, accuracy)
            model.train()
        self._rows = names.index(after) + 1
        self.task = None
