"""Hugging Face Trainer integration: a collator that mixes replay into every batch (its callback is in
:mod:`rehearsal.replay.callback`).

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

import collections
import functools
import os
import time
import warnings
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rehearsal.config import ReplayConfig
from rehearsal.crypto.keys import KeyRing
from rehearsal.embedding import Encoder
from rehearsal.errors import ConfigError
from rehearsal.memory.facade import RehearsalMemory, Resolver
from rehearsal.replay.choice import ReplayChoice
from rehearsal.replay.modes import selectable_mode
from rehearsal.replay.selector import ReplaySelector

__all__ = [
    "REPLAY_CANDIDATE",
    "REPLAY_FLAG",
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

    def has_news(self) -> bool:
        """Whether anything happened worth a log line. Evaluation-only batches are not news. The
        DataLoader collates one batch ahead, so a MIR step's kept rows can be counted when no batch is."""
        return bool(self.batches or self.replayed or self.candidates)

    def as_logs(self) -> dict[str, float]:
        """The counters as Trainer log values. ``replay/mean_similarity`` is there only when some replay
        had one (a random draw has none): a missing number, not a NaN in every log line."""
        similarity = (
            {"replay/mean_similarity": self.similarity_sum / self.similarity_count}
            if self.similarity_count
            else {}
        )
        return {
            "replay/examples": float(self.replayed),
            "replay/tokens": float(self.replayed_tokens),
            "replay/per_batch": self.replayed / self.batches if self.batches else 0.0,
            **similarity,
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
        label2id: Mapping[str, int] | None = None,
    ) -> None:
        """``memory`` (an open memory or its folder) is searched read-only; ``base_collator`` pads the new
        rows plus the replayed ones, which ``tokenizer`` encodes from their texts. ``task`` keeps the task
        being trained out of replay (``eligible`` adds any other filter); ``keys``/``resolver`` open a
        memory given by folder. ``drop_columns`` are removed before the base collator sees the rows.
        """
        self.config = config or ReplayConfig()
        selectable_mode(self.config.mode)  # refuses a mode whose replay is not chosen from the memory
        # Class names stored as labels (e.g. ingested from a file) map to the model's class ids, as the
        # Trainer's ``model.config.label2id`` does; int labels are used as they are.
        self.label2id = dict(label2id) if label2id is not None else None
        # None: no callback drives this collator, every batch with vectors gets replay. RehearsalCallback
        # sets it False around evaluation and prediction, which use the same collator and must not replay.
        self.training: bool | None = None
        self._warned = False
        self._handle: RehearsalMemory | None = None
        self._handle_pid = -1
        if isinstance(memory, RehearsalMemory):
            self._path: Path | str = memory.path
            self._handle, self._handle_pid = memory, os.getpid()
            self._reopen = memory.reader(keys=keys, resolver=resolver)
        else:
            # A server URL stays a string: as a Path its "//" would collapse.
            self._path = memory if isinstance(memory, str) and "://" in memory else Path(memory)
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
        # mir: each collated pool's (task, similarity) per candidate, oldest first; the trainer takes one
        # per ranked batch to count the candidates it keeps (the DataLoader collates a batch ahead).
        self.candidate_pools: collections.deque[list[tuple[str | None, float]]] = collections.deque(maxlen=8)
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
        if self.config.vector_column not in features[0] or self.training is False:
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
                "replay mode 'mir' needs rehearsal.replay.trainer.RehearsalTrainer (rh.RehearsalTrainer: it "
                "ranks the candidate pool by interference); with another Trainer every candidate would be "
                "trained on"
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
        choice, texts = self._choose(vectors, count)
        fetched = time.perf_counter()
        self.last_replay_ids = []
        out: list[dict[str, Any]] = []
        tokens = 0
        unusable: dict[str, int] = {}
        pool_info: list[tuple[str | None, float]] = []
        needs_class = label_key is not None and not token_labels  # a class label, not the tokens
        for entry_id, score in zip(choice.ids, choice.scores, strict=True):
            meta = choice.metadata.get(entry_id, {})
            label = self._class_id(meta.get("label"))
            reason = self._unusable(entry_id in texts, meta, label, needs_class)
            if reason is not None:
                unusable[reason] = unusable.get(reason, 0) + 1
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
                task = meta.get("task")
                pool_info.append((None if task is None else str(task), float(score)))
                continue
            out.append(feature)
            self.last_replay_ids.append(entry_id)
            tokens += n_tokens
            self._count_replayed(score, meta)
        self.stats.replayed_tokens += tokens
        self.stats.tokenize_seconds += time.perf_counter() - fetched
        if pool:
            self.candidate_pools.append(pool_info)
        if choice.ids and not out and unusable:
            self._warn_unusable(len(choice.ids), unusable)
        return out

    def _choose(self, vectors: np.ndarray, count: int) -> tuple[ReplayChoice, dict[int, str]]:
        """The selector's choice for a batch whose new rows are ``vectors`` (seeded by the batch itself,
        so a rank and epoch always replay the same for the same batch), and the chosen entries' texts."""
        selector = self._get_selector()
        seed = [self.config.seed, _rank(), self.epoch, zlib.crc32(vectors.tobytes())]
        started = time.perf_counter()
        choice = selector.select(vectors, count, rng=np.random.default_rng(seed))
        chosen = time.perf_counter()
        texts = self.replay_texts(selector.memory, choice.ids)
        self.stats.search_seconds += chosen - started
        self.stats.fetch_seconds += time.perf_counter() - chosen
        return choice, texts

    def _unusable(self, has_text: bool, meta: Mapping[str, Any], label: Any, needs_class: bool) -> str | None:
        """Why a chosen entry cannot be replayed (None: it can): no text, or no class the model knows."""
        if not has_text:
            return "no text (forgotten, or an embedding-only memory without a resolver)"
        if needs_class and not isinstance(label, int):
            return _label_reason(meta.get("label"), self.label2id)
        return None

    def _count_replayed(self, score: float, meta: Mapping[str, Any]) -> None:
        self.stats.replayed += 1
        if not np.isnan(score):
            self.stats.similarity_sum += score
            self.stats.similarity_count += 1
        if meta.get("task") is not None:
            self.stats.tasks.add(str(meta["task"]))

    def replay_texts(self, memory: RehearsalMemory, ids: Sequence[int]) -> dict[int, str]:
        """The texts the chosen entries are replayed as: the memory's own (an id it no longer holds is
        absent). A subclass may rewrite them, e.g. with the model's own answers (self-rehearsal)."""
        return memory.texts_by_id(ids)

    def memory_classes(self) -> set[int]:
        """The class ids replay can draw: the eligible entries' labels, through ``label2id``."""
        labels = self._get_selector().memory.group_ids("label", where=self.eligible)
        ids = (self._class_id(label) for label in labels)
        return {c for c in ids if isinstance(c, int) and not isinstance(c, bool)}

    def _class_id(self, label: Any) -> Any:
        if isinstance(label, str) and self.label2id is not None:
            return self.label2id.get(label, label)
        return label

    def _warn_unusable(self, chosen: int, unusable: dict[str, int]) -> None:
        """Once per collator: replay chose entries and could use none of them, so training would go on
        with no replay at all and only the logs' ``replay/examples 0`` would show it."""
        if self._warned:
            return
        self._warned = True
        why = "; ".join(f"{n} {reason}" for reason, n in unusable.items())
        warnings.warn(
            f"replay chose {chosen} memory entries for a batch and could use none ({why}): "
            "training continues WITHOUT replay until this is fixed",
            RuntimeWarning,
            stacklevel=3,
        )


def _label_reason(label: Any, label2id: Mapping[str, int] | None) -> str:
    """Why an entry's label cannot be a class id, worded so that entries with the same fault group."""
    if label is None:
        return "without a label (ingest them with a label field)"
    if isinstance(label, str) and label2id is None:
        return (
            "with a class name as label, not a class id (pass label2id=model.config.label2id to the collator)"
        )
    if isinstance(label, str):
        return "with a class name that label2id does not hold"
    return f"with a {type(label).__name__} label, not an int class id"


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
