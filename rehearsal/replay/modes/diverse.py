"""``diverse``: the union of every new example's ``k`` nearest neighbours, subsampled at random (CMR's
indexed replay)."""

from __future__ import annotations

import numpy as np

from rehearsal.replay.modes.base import Picks, register_mode
from rehearsal.replay.modes.spreading import SpreadingMode
from rehearsal.store.types import Hit

__all__ = ["DiverseMode"]


@register_mode
class DiverseMode(SpreadingMode):
    """Every query's top-k, de-duplicated, then ``count`` of them at random."""

    name = "diverse"

    def spread(
        self, vectors: np.ndarray, hits: list[list[Hit]], count: int, picks: Picks, rng: np.random.Generator
    ) -> None:
        best: dict[int, Hit] = {}
        for hit in (h for row in hits for h in row):
            if hit.id not in picks.own and (hit.id not in best or hit.score > best[hit.id].score):
                best[hit.id] = hit
        union = sorted(best)  # sorted, so the draw depends on the seed only, not on the search's order
        for position in rng.permutation(len(union))[:count]:
            picks.take(best[union[int(position)]])
