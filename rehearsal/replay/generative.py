"""``GenerativeCollator``: tops each batch up with generated examples of old classes (``mode="generative"``).

The replay share (``ReplayConfig.ratio``) is filled from a :class:`GeneratedPool` written ahead of the
phase, class-balanced over the old classes; nothing is generated or searched inside a training step. The
draw is seeded from (seed, epoch, the batch's content), as the retrieval collator's is, so reruns replay
the same examples.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from rehearsal.config import ReplayConfig
from rehearsal.errors import ConfigError
from rehearsal.methods.generative.pool import GeneratedPool
from rehearsal.replay.collator import REPLAY_FLAG, ReplayStats, label_key_of

__all__ = ["GenerativeCollator"]


class GenerativeCollator:
    """Wraps a collator: new rows plus ``config.replay_count(b)`` generated rows from ``pool``."""

    def __init__(
        self,
        pool: GeneratedPool,
        base_collator: Callable[[list[dict[str, Any]]], Any],
        tokenizer: Any,
        config: ReplayConfig,
        *,
        drop_columns: Sequence[str] = ("task",),
    ) -> None:
        """``pool`` holds the old classes' generated examples (class ids as labels); ``tokenizer`` encodes
        them for the model being trained; ``drop_columns`` (and the config's text and vector columns)
        are removed before ``base_collator`` pads the rows."""
        if config.mode != "generative":
            raise ConfigError(f"GenerativeCollator replays in mode 'generative', got {config.mode!r}")
        self.pool = pool
        self.base_collator = base_collator
        self.tokenizer = tokenizer
        self.config = config
        self._drop = {config.vector_column, config.text_column, *drop_columns}
        self.epoch = 0
        self.stats = ReplayStats()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def pop_stats(self) -> ReplayStats:
        stats, self.stats = self.stats, ReplayStats()
        return stats

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> Any:
        rows = [
            {k: v for k, v in f.items() if k not in self._drop and not isinstance(v, str)} for f in features
        ]
        if not rows:
            return self.base_collator([])
        label_key = label_key_of(rows[0], self.config.label_column)
        count = self.config.replay_count(len(rows)) if len(self.pool) else 0
        started = time.perf_counter()
        content = repr([f.get("input_ids") for f in rows]).encode()
        seed = [self.config.seed, self.epoch, zlib.crc32(content)]
        replay: list[dict[str, Any]] = []
        tokens = 0
        for entry in self.pool.sample(count, np.random.default_rng(seed)):
            encoded = self.tokenizer(entry.text, truncation=True, max_length=self.config.max_length)
            n_tokens = len(encoded["input_ids"])
            if (
                self.config.max_replay_tokens is not None
                and tokens + n_tokens > self.config.max_replay_tokens
            ):
                break
            feature = {k: v for k, v in encoded.items() if k in rows[0]}
            if label_key is not None:
                feature[label_key] = entry.label
            replay.append(feature)
            tokens += n_tokens
            self.stats.tasks.add(entry.task)
        self.stats.batches += 1
        self.stats.replayed += len(replay)
        self.stats.replayed_tokens += tokens
        self.stats.tokenize_seconds += time.perf_counter() - started
        if self.config.mark_replay:
            for row, flag in [(f, 0) for f in rows] + [(f, 1) for f in replay]:
                row[REPLAY_FLAG] = flag
        return self.base_collator(rows + replay)
