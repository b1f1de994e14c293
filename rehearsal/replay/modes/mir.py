"""``mir`` (maximally interfered retrieval): the candidate pool the trainer ranks by interference.

The collator asks for ``ReplayConfig.pool_size(count)`` ids: the batch's nearest neighbours spread over
the old groups, plus a ``random_share`` class-balanced random fill. ``RehearsalTrainer``
(``rehearsal.replay.interference``) takes one virtual SGD step on the new rows and trains on the
``count`` candidates whose loss rises most.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rehearsal.replay.modes.base import Picks, register_mode
from rehearsal.replay.modes.spreading import SpreadingMode
from rehearsal.store.types import Hit

__all__ = ["MirMode"]


@register_mode
class MirMode(SpreadingMode):
    """The pool: neighbours spread over the old groups for ``1 - random_share`` of it, random for the rest."""

    name = "mir"

    def spread(
        self, vectors: np.ndarray, hits: list[list[Hit]], count: int, picks: Picks, rng: np.random.Generator
    ) -> None:
        """The groups met in the hits take turns (nearest group first), each adding its next-nearest
        entry, so no single old class fills the pool."""
        want = count - round(count * self.config.random_share)
        by_group: dict[Any, list[Hit]] = {}
        for hit in sorted((h for row in hits for h in row), key=lambda h: (-h.score, h.id)):
            if hit.id not in picks.own:
                by_group.setdefault(hit.metadata.get(self.config.group_by), []).append(hit)
        queues = list(by_group.values())  # dicts keep insertion order: nearest group first
        position = [0] * len(queues)
        while len(picks) < want and any(p < len(q) for p, q in zip(position, queues, strict=True)):
            for g, queue in enumerate(queues):
                while position[g] < len(queue) and queue[position[g]].id in picks.scores:
                    position[g] += 1
                if position[g] < len(queue) and len(picks) < want:
                    picks.take(queue[position[g]])
                    position[g] += 1
