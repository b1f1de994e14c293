"""The Trainer callback that goes with :class:`~rehearsal.replay.collator.RehearsalCollator`: it checks the
setup when training begins, reseeds replay each epoch, keeps evaluation and prediction free of replay, adds
replay statistics to the logs, and admits the run's examples into the memory when training ends.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from rehearsal.config import ReplayConfig
from rehearsal.crypto.keys import KeyRing
from rehearsal.errors import ConfigError
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.memory.policies import AdmissionPolicy, KeepAll
from rehearsal.methods.predictors import MemoryClassifier
from rehearsal.replay.collator import RehearsalCollator, label_key_of

__all__ = ["RehearsalCallback"]


class RehearsalCallback(TrainerCallback):
    """Admits the run's examples into the memory at the end of training (main process only), reseeds the
    collator each epoch, and adds replay statistics to the Trainer's logs."""

    def __init__(
        self,
        memory: RehearsalMemory | str | os.PathLike[str],
        *,
        keys: KeyRing | None = None,
        collator: RehearsalCollator | None = None,
        dataset: Any = None,
        task: str | None = None,
        tenant: str | None = None,
        policy: AdmissionPolicy | None = None,
        seed: int = 0,
        text_column: str = "text",
        vector_column: str = "embedding",
        label_column: str | None = None,
        predictor: MemoryClassifier | None = None,
    ) -> None:
        """``memory`` (open, or its folder with ``keys``) receives ``dataset``'s rows when training ends,
        through ``policy`` (default: keep all), as ``task`` (default: the dataset's task column) and
        ``tenant``; ``collator`` is the RehearsalCollator it reseeds, switches off around evaluation and
        whose statistics it logs. The column names say where texts, vectors and labels are.
        ``predictor`` (a :class:`~rehearsal.methods.predictors.MemoryClassifier` over the trained model)
        is refitted on the memory once the examples are admitted, so it predicts with the final weights.
        """
        self.memory = memory
        self.keys = keys
        self.collator = collator
        self.dataset = dataset
        self.task = task
        self.tenant = tenant
        self.policy = policy or KeepAll()
        self.seed = seed
        self.columns = (text_column, vector_column, label_column)
        self.predictor = predictor
        self.admitted: list[int] = []
        self._in_training = False

    # -- replay only while training: the Trainer evaluates and predicts through the same collator ----

    def _replay(self, on: bool) -> None:
        if self.collator is not None:
            self.collator.training = on

    def on_init_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._replay(False)  # trainer.evaluate() or predict() before train() must not replay either

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        # The flow callback (always first) has decided by now whether an evaluation follows this step.
        if control.should_evaluate:
            self._replay(False)

    def on_epoch_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if control.should_evaluate:
            self._replay(False)

    def on_evaluate(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._replay(self._in_training)  # back to replay when the evaluation was one inside training

    def _default_label_column(self) -> str:
        return self.collator.config.label_column if self.collator is not None else ReplayConfig().label_column

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.collator is not None and args.remove_unused_columns:
            raise ConfigError(
                "replay needs TrainingArguments(remove_unused_columns=False): otherwise the Trainer drops "
                "the "
                f"{self.collator.config.vector_column!r} and {self.collator.config.text_column!r} columns "
                "before the collator sees them"
            )
        self._check_dataset()
        self._in_training = True
        # With eval_on_start the first evaluation runs before any training batch.
        self._replay(not args.eval_on_start)

    def _check_dataset(self) -> None:
        """The columns admission (and replay) will need, checked now rather than after a whole run."""
        columns = getattr(self.dataset, "column_names", None)
        if columns is None:
            return
        text_col, vec_col, _ = self.columns
        if vec_col not in columns:
            raise ConfigError(
                f"the training dataset has no {vec_col!r} column: add it once with "
                f"train = rh.embed_dataset(train, memory.encoder) before training (columns: {columns})"
            )
        if text_col not in columns:
            raise ConfigError(
                f"the training dataset has no {text_col!r} column to admit (columns: {columns})"
            )
        if self.collator is not None and self.collator.config.mode == "mir":
            self.collator.check_interference_hook()  # fail before the first step, not at the first batch

    def on_epoch_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.collator is not None:
            self.collator.set_epoch(int(state.epoch or 0))

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        if self.collator is None or logs is None or not state.is_world_process_zero:
            return
        stats = self.collator.pop_stats()
        if not stats.has_news():
            return
        replay_logs = stats.as_logs()
        logs.update(replay_logs)
        if state.log_history:
            state.log_history[-1].update(replay_logs)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._in_training = False
        self._replay(False)
        if self.dataset is None or not state.is_world_process_zero:
            return
        text_col, vec_col, label_col = self.columns
        rows = self.dataset
        texts = list(rows[text_col])
        vectors = np.asarray(rows[vec_col], dtype=np.float32)
        label_col = label_key_of(rows.column_names, label_col or self._default_label_column())
        labels = list(rows[label_col]) if label_col is not None else [None] * len(texts)
        tasks = (
            list(rows["task"])
            if self.task is None and "task" in rows.column_names
            else [self.task] * len(texts)
        )
        metadata = [{"task": t, "label": lab} for t, lab in zip(tasks, labels, strict=True)]
        memory = self.memory
        owned = not isinstance(memory, RehearsalMemory)
        handle = (
            memory if isinstance(memory, RehearsalMemory) else RehearsalMemory.open(memory, keys=self.keys)
        )
        try:
            rng = np.random.default_rng([self.seed, state.global_step])
            self.admitted = handle.admit(
                texts, policy=self.policy, rng=rng, metadata=metadata, tenant=self.tenant, vectors=vectors
            )
        finally:
            if owned:
                handle.close()
        if self.predictor is not None:
            if self.predictor.memory.read_only:
                self.predictor.memory.refresh()  # a reader handle: see what was just admitted
            self.predictor.fit()
