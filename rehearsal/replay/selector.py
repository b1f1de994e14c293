"""Choosing the replay for a batch: ``ReplaySelector`` looks its config's mode up in the registry
(``rehearsal.replay.modes``) and hands the batch to that mode's class.

The batch arrives with its precomputed vectors, so choosing replay costs at most an index search, never
an encoder forward pass. Only entries matching ``eligible`` (e.g. other tasks than the one being trained)
can be replayed, and near-exact copies of the batch's own examples are skipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from rehearsal.config import ReplayConfig
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.replay.choice import ReplayChoice
from rehearsal.replay.modes import ReplayMode, selectable_mode

__all__ = ["ReplayChoice", "ReplaySelector"]  # ReplayChoice is re-exported for callers


class ReplaySelector:
    """Picks replay ids for batches from one memory, under one ``ReplayConfig``."""

    def __init__(
        self, memory: RehearsalMemory, config: ReplayConfig, *, eligible: Mapping[str, Any] | None = None
    ) -> None:
        self.memory = memory
        self.config = config
        self.eligible = dict(eligible) if eligible is not None else None
        # One instance per mode used, made on first use: it keeps this selector's state for the mode
        # (cached groups of eligible ids, the coverage schedule) from batch to batch.
        self._modes: dict[str, ReplayMode] = {}

    def select(self, vectors: np.ndarray, count: int, *, rng: np.random.Generator) -> ReplayChoice:
        """``count`` replay ids for a batch whose examples have ``vectors`` (b, dim)."""
        if count <= 0 or len(self.memory) == 0:
            return ReplayChoice([], [])
        return self._mode().select(vectors, count, rng=rng)

    def _mode(self) -> ReplayMode:
        name = self.config.mode
        if name not in self._modes:
            self._modes[name] = selectable_mode(name)(self.memory, self.config, eligible=self.eligible)
        return self._modes[name]
