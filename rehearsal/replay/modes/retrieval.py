"""``retrieval``: the batch's nearest old neighbours, ``k`` per new example, merged and de-duplicated.

Whatever the search cannot fill (tiny memories, heavy filters) is filled at random, never with the
batch's own stored copies that the search found.
"""

from __future__ import annotations

import numpy as np

from rehearsal.replay.choice import ReplayChoice
from rehearsal.replay.modes.base import Picks, ReplayMode, register_mode

__all__ = ["RetrievalMode"]


@register_mode
class RetrievalMode(ReplayMode):
    """Nearest neighbours of the batch, round-robin by rank; a random fill for any shortfall."""

    name = "retrieval"

    def random_slots(self, count: int) -> int:
        """How many of ``count`` slots the random draw fills from the start (none here)."""
        return 0

    def select(self, vectors: np.ndarray, count: int, *, rng: np.random.Generator) -> ReplayChoice:
        picks = Picks()
        nearest = count - self.random_slots(count)
        if nearest > 0:
            self.take_nearest(vectors, nearest, picks, rng)
        self.fill_random(count - len(picks), picks, rng)
        return self.finish(picks)

    def take_nearest(self, vectors: np.ndarray, want: int, picks: Picks, rng: np.random.Generator) -> None:
        """Pick up to ``want`` nearest neighbours of the batch; record the batch's own copies the search
        met in ``picks.own``, so the random fill skips them too."""
        # Round-robin over the batch by rank, in a seeded order, so every new example contributes its
        # nearest neighbours before any contributes its second-nearest. Only the rows that round-robin
        # can reach are searched (twice the slots, for de-duplication): the search is the per-step cost
        # of replay, and a batch of 24 with 4 retrieval slots needs 8 queries, not 24.
        order = rng.permutation(len(vectors))[: min(len(vectors), max(8, 2 * want))]
        hits = self.search(vectors[order], self.eligible)
        picks.own = self.own_copies(hits)
        for rank in range(self.config.k):
            for row in hits:  # already in the seeded order
                if rank < len(row) and picks.free(row[rank].id):
                    picks.take(row[rank])
                    if len(picks) >= want:
                        return
