"""The replay modes that spread what one search returns: ``mir`` (its candidate pool), ``coverage`` and
``diverse`` (see ``ReplayConfig``).

Nearest neighbours of a batch concentrate on the few old classes closest to the new data and starve the
rest (benchmarks/RESULTS.md: retrieval-only replay is ~9 points under random). Each of these modes keeps
the search but breaks that concentration: MIR's pool spreads the neighbours over the old groups and adds
a class-balanced random fill for the trainer to rank by interference; ``coverage`` visits every old
group on a bounded schedule; ``diverse`` samples at random from the union of every new example's
neighbours.

Every one searches all of the batch's vectors once over the eligible entries (the cost of the
``retrieval`` mode), so the batch's own stored copies are always found and never replayed, and the
random parts go through ``ReplayMode.fill_random`` (the class-balanced draw every mode shares).
"""

from __future__ import annotations

import numpy as np

from rehearsal.replay.choice import ReplayChoice
from rehearsal.replay.modes.base import Picks, ReplayMode
from rehearsal.store.types import Hit

__all__ = ["SpreadingMode"]


class SpreadingMode(ReplayMode):
    """One search of every batch row, the mode's own ``spread`` of the hits, then the random fill."""

    def select(self, vectors: np.ndarray, count: int, *, rng: np.random.Generator) -> ReplayChoice:
        """``count`` ids for a batch with ``vectors`` (b, dim); in ``mir`` mode ``count`` is the pool."""
        hits = self.search(vectors, self.eligible)
        picks = Picks(own=self.own_copies(hits))
        self.spread(vectors, hits, count, picks, rng)
        # The class-balanced draw skips the batch's own copies and delivers the count whenever the
        # memory holds that many eligible entries.
        self.fill_random(count - len(picks), picks, rng)
        return self.finish(picks)

    def spread(
        self, vectors: np.ndarray, hits: list[list[Hit]], count: int, picks: Picks, rng: np.random.Generator
    ) -> None:
        """Pick from ``hits`` (one row of hits per row of ``vectors``) toward ``count``."""
        raise NotImplementedError
