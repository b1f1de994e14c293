"""``random`` (the default): replay drawn at random from the eligible memory, class by class with
``balance="class"``; no search. The measured best so far (benchmarks/RESULTS.md, "Replay selection in the
sparse regime").
"""

from __future__ import annotations

import numpy as np

from rehearsal.replay.choice import ReplayChoice
from rehearsal.replay.modes.base import Picks, ReplayMode, register_mode

__all__ = ["RandomMode"]


@register_mode
class RandomMode(ReplayMode):
    """The class-balanced (or uniform) random draw alone. With no search, the batch's own stored rows
    are kept out by the eligible filter (the task being trained), not by matching vectors."""

    name = "random"

    def select(self, vectors: np.ndarray, count: int, *, rng: np.random.Generator) -> ReplayChoice:
        picks = Picks()
        self.fill_random(count, picks, rng)
        return self.finish(picks)
