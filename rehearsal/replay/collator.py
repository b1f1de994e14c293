"""Hugging Face Trainer integration: a collator that mixes replay into every batch, and a callback.

An existing Trainer script gains replay with::

    train = rh.embed_dataset(train, memory.encoder)                       # vectors once, as a column
    collator = rh.RehearsalCollator(memory, base_collator, tokenizer, rh.ReplayConfig(), task="verbs")
    callback = rh.RehearsalCallback(memory, collator=collator, dataset=train, task="verbs")
    trainer = Trainer(..., data_collator=collator, callbacks=[callback])

``TrainingArguments(remove_unused_columns=False)`` is required: otherwise the Trainer drops the vector
and text columns before the collator sees them (the collator says so if it happens). The collator drops
those columns itself before calling the base collator.

Given an open memory, the collator searches through that handle in the process that made it; each other
process or DataLoader worker (after a fork or unpickling) opens its own read-only handle, lazily (an index
is never pickled). Given a path, it opens a read-only handle the same way. Replay randomness is seeded from
(seed, rank, epoch, the batch's content), so ranks draw different replay and reruns draw the same.
"""

from __future__ import annotations

import functools
import os
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from rehearsal.config import ReplayConfig
from rehearsal.crypto.keys import KeyRing
from rehearsal.embedding import Encoder
from rehearsal.errors import ConfigError
from rehearsal.memory.facade import RehearsalMemory, Resolver
from rehearsal.memory.policies import AdmissionPolicy, KeepAll
from rehearsal.replay.selector import ReplaySelector

__all__ = [
    "REPLAY_CANDIDATE",
    "REPLAY_FLAG",
    "RehearsalCallback",
    "RehearsalCollator",
    "ReplayStats",
    "embed_dataset",
]

REPLAY_FLAG = "is_replay"
# The REPLAY_FLAG value of a MIR candidate: a pool row that RehearsalTrainer ranks, then keeps or drops.
REPLAY_CANDIDATE = 2


def label_key_of(columns: Any, preferred: str) -> str | None:
    """The label column among ``columns``: ``preferred`` (``ReplayConfig.label_column``), else the HF
    names "labels" or "label"; None when there is none."""
    return next((k for k in (preferred, "labels", "label") if k in columns), None)


@dataclass
class ReplayStats:
    """Replay counters since the last time they were read."""

    batches: int = 0
    replayed: int = 0
    replayed_tokens: int = 0
    similarity_sum: float = 0.0
    similarity_count: int = 0
    search_seconds: float = 0.0  # choosing replay: index search + catalog metadata
    fetch_seconds: float = 0.0  # reading (decrypting or resolving) the replay texts
    tokenize_seconds: float = 0.0
    passthrough_batches: int = 0  # batches without vectors (evaluation), collated without replay
    candidates: int = 0  # mir: pool rows sent to the trainer (those it keeps count as replayed)
    scoring_seconds: float = 0.0  # mir: the candidates' losses before and after the virtual step
    virtual_step_seconds: float = 0.0  # mir: the new rows' gradient and the virtual SGD step
    tasks: set[str] = field(default_factory=set)

    def as_logs(self) -> dict[str, float]:
        mean_sim = self.similarity_sum / self.similarity_count if self.similarity_count else float("nan")
        return {
            "replay/examples": float(self.replayed),
            "replay/tokens": float(self.replayed_tokens),
            "replay/per_batch": self.replayed / self.batches if self.batches else 0.0,
            "replay/mean_similarity": mean_sim,
            "replay/old_tasks_covered": float(len(self.tasks)),
            "replay/search_ms_per_batch": 1000 * self.search_seconds / max(self.batches, 1),
            "replay/fetch_ms_per_batch": 1000 * self.fetch_seconds / max(self.batches, 1),
            "replay/tokenize_ms_per_batch": 1000 * self.tokenize_seconds / max(self.batches, 1),
            "replay/candidates": float(self.candidates),
            "replay/scoring_ms_per_batch": 1000 * self.scoring_seconds / max(self.batches, 1),
            "replay/virtual_step_ms_per_batch": 1000 * self.virtual_step_seconds / max(self.batches, 1),
        }


def _rank() -> int:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return int(dist.get_rank())
    return int(os.environ.get("RANK", "0"))


class RehearsalCollator:
    """Wraps any collator: tops each batch of new examples up with replay from a memory."""

    def __init__(
        self,
        memory: RehearsalMemory | str | os.PathLike[str],
        base_collator: Callable[[list[dict[str, Any]]], Any],
        tokenizer: Any,
        config: ReplayConfig | None = None,
        *,
        keys: KeyRing | None = None,
        resolver: Resolver | None = None,
        task: str | None = None,
        eligible: Mapping[str, Any] | None = None,
        drop_columns: Sequence[str] = ("task",),
    ) -> None:
        self.config = config or ReplayConfig()
        self._handle: RehearsalMemory | None = None
        self._handle_pid = -1
        if isinstance(memory, RehearsalMemory):
            self._path = memory.path
            self._handle, self._handle_pid = memory, os.getpid()
            self._reopen = memory.reader(keys=keys, resolver=resolver)
        else:
            self._path = Path(memory)
            self._reopen = functools.partial(
                RehearsalMemory.open, self._path, keys=keys, resolver=resolver, read_only=True
            )
        self.base_collator = base_collator
        self.tokenizer = tokenizer
        where = dict(eligible or {})
        if task is not None:
            where.setdefault("task", {"$ne": task})
        self.eligible = where or None
        self._drop = {self.config.vector_column, self.config.text_column, *drop_columns}
        self.epoch = 0
        self.stats = ReplayStats()
        self.last_replay_ids: list[int] = []  # ids replayed into the latest batch (mir: its candidate pool)
        # Set by RehearsalTrainer (attach_interference_hook): only it can rank a MIR pool; any other
        # Trainer would silently train on the whole pool, i.e. random replay with pool_factor x the budget.
        self.interference_hook = False
        self._selector: ReplaySelector | None = None
        self._pid = -1

    def __getstate__(self) -> dict[str, Any]:
        # Workers started by spawn get a copy without the open handle; they reopen on first use.
        state = self.__dict__.copy()
        state["_selector"], state["_pid"], state["_handle"] = None, -1, None
        return state

    def attach_interference_hook(self) -> None:
        """Declare that the trainer ranks MIR candidates (``RehearsalTrainer`` calls this)."""
        self.interference_hook = True

    def set_epoch(self, epoch: int) -> None:
        """Reseed replay for a new epoch (the callback calls this)."""
        self.epoch = int(epoch)

    def pop_stats(self) -> ReplayStats:
        stats, self.stats = self.stats, ReplayStats()
        return stats

    def _get_selector(self) -> ReplaySelector:
        pid = os.getpid()
        if self._selector is None or self._pid != pid:
            # A handle inherited through fork shares an SQLite connection with the parent: never use it.
            own = self._handle is not None and self._handle_pid == pid
            memory = self._handle if own and self._handle is not None else self._reopen()
            self._selector = ReplaySelector(memory, self.config, eligible=self.eligible)
            self._pid = pid
        return self._selector

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> Any:
        features = list(features)
        if not features:
            return self.base_collator([])
        clean = [
            {k: v for k, v in f.items() if k not in self._drop and not isinstance(v, str)} for f in features
        ]
        if self.config.vector_column not in features[0]:
            # Evaluation and prediction batches come through the same collator: they get no replay.
            self.stats.passthrough_batches += 1
            return self.base_collator(clean)
        vectors = np.asarray([f[self.config.vector_column] for f in features], dtype=np.float32)
        label_key = label_key_of(features[0], self.config.label_column)
        # Token-level labels (causal LM data prepared by e.g. TRL) are rebuilt from the replay's own tokens.
        token_labels = label_key is not None and isinstance(features[0][label_key], (list, tuple))
        count = self.config.replay_count(len(features))
        pool = self.config.mode == "mir"
        if pool:
            self.check_interference_hook()
            count = self.config.pool_size(count)
        replay = (
            self._replay_features(vectors, count, label_key, set(clean[0]), token_labels, pool=pool)
            if count
            else []
        )
        self.stats.batches += 1
        if self.config.mark_replay or pool:
            flag_of_replay = REPLAY_CANDIDATE if pool else 1
            for row, flag in [(f, 0) for f in clean] + [(f, flag_of_replay) for f in replay]:
                row[REPLAY_FLAG] = flag
        return self.base_collator(clean + replay)

    def check_interference_hook(self) -> None:
        """ConfigError unless a trainer that ranks MIR candidates is attached."""
        if not self.interference_hook:
            raise ConfigError(
                "replay mode 'mir' needs rehearsal.trainer.RehearsalTrainer (it ranks the candidate pool "
                "by interference); with another Trainer every candidate would be trained on"
            )

    def _replay_features(
        self,
        vectors: np.ndarray,
        count: int,
        label_key: str | None,
        keys: set[str],
        token_labels: bool,
        *,
        pool: bool = False,
    ) -> list[dict[str, Any]]:
        selector = self._get_selector()
        seed = [self.config.seed, _rank(), self.epoch, zlib.crc32(vectors.tobytes())]
        started = time.perf_counter()
        choice = selector.select(vectors, count, rng=np.random.default_rng(seed))
        chosen = time.perf_counter()
        texts = selector.memory.texts_by_id(choice.ids)
        fetched = time.perf_counter()
        self.stats.search_seconds += chosen - started
        self.stats.fetch_seconds += fetched - chosen
        self.last_replay_ids = []
        out: list[dict[str, Any]] = []
        tokens = 0
        for entry_id, score in zip(choice.ids, choice.scores, strict=True):
            meta = choice.metadata.get(entry_id, {})
            label = meta.get("label")
            if entry_id not in texts or (
                label_key is not None and not token_labels and not isinstance(label, int)
            ):
                continue
            encoded = self.tokenizer(texts[entry_id], truncation=True, max_length=self.config.max_length)
            n_tokens = len(encoded["input_ids"])
            if (
                not pool
                and self.config.max_replay_tokens is not None
                and tokens + n_tokens > self.config.max_replay_tokens
            ):
                break
            feature = {k: v for k, v in encoded.items() if k in keys}
            if label_key is not None:
                feature[label_key] = list(encoded["input_ids"]) if token_labels else label
            if pool:
                # A candidate is not replay yet: the trainer counts (and token-budgets) the rows it keeps.
                out.append(feature)
                self.last_replay_ids.append(entry_id)
                self.stats.candidates += 1
                continue
            out.append(feature)
            self.last_replay_ids.append(entry_id)
            tokens += n_tokens
            self.stats.replayed += 1
            if not np.isnan(score):
                self.stats.similarity_sum += score
                self.stats.similarity_count += 1
            if meta.get("task") is not None:
                self.stats.tasks.add(str(meta["task"]))
        self.stats.replayed_tokens += tokens
        self.stats.tokenize_seconds += time.perf_counter() - fetched
        return out


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
    ) -> None:
        self.memory = memory
        self.keys = keys
        self.collator = collator
        self.dataset = dataset
        self.task = task
        self.tenant = tenant
        self.policy = policy or KeepAll()
        self.seed = seed
        self.columns = (text_column, vector_column, label_column)
        self.admitted: list[int] = []

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
        if stats == ReplayStats():
            # Nothing since the last log. (The DataLoader collates ahead of the step, so a MIR step's
            # kept rows can arrive after their batch was counted: batches may be 0 with rows to report.)
            return
        replay_logs = stats.as_logs()
        logs.update(replay_logs)
        if state.log_history:
            state.log_history[-1].update(replay_logs)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
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


def embed_dataset(
    dataset: Any, encoder: Encoder, *, text_column: str = "text", vector_column: str = "embedding"
) -> Any:
    """Return ``dataset`` with a column of unit vectors of its texts, computed once."""
    if text_column not in dataset.column_names:
        raise ConfigError(f"dataset has no column {text_column!r}; columns are {dataset.column_names}")
    vectors = encoder.encode(list(dataset[text_column]))
    if vector_column in dataset.column_names:
        dataset = dataset.remove_columns(vector_column)
    return dataset.add_column(vector_column, [row.tolist() for row in vectors])
