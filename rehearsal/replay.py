"""Choosing the replay for a batch: nearest old neighbours, a random (class-balanced) share, or both.

The batch arrives with its precomputed vectors, so choosing replay costs one index search, never an
encoder forward pass. Only entries matching ``eligible`` (e.g. other tasks than the one being trained)
can be replayed, and near-exact copies of the batch's own examples are skipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rehearsal.config import ReplayConfig
from rehearsal.index import faiss_threads
from rehearsal.memory import RehearsalMemory
from rehearsal.selection import ModeSelection

__all__ = ["ReplayChoice", "ReplaySelector"]

# A stored vector this close to a batch vector is the batch's own example stored earlier.
_SELF_MATCH = 0.9999
# Modes chosen in rehearsal.selection (in "mir" the count asked for is the candidate pool).
MODE_SELECTIONS = ("mir", "coverage", "diverse")


@dataclass(frozen=True)
class ReplayChoice:
    """Replay ids in the order chosen, with their similarity to the batch (NaN for random picks)."""

    ids: list[int]
    scores: list[float]
    metadata: dict[int, dict[str, Any]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)


class ReplaySelector:
    """Picks replay ids for batches from one memory, under one ``ReplayConfig``."""

    def __init__(
        self, memory: RehearsalMemory, config: ReplayConfig, *, eligible: Mapping[str, Any] | None = None
    ) -> None:
        self.memory = memory
        self.config = config
        self.eligible = dict(eligible) if eligible is not None else None
        self._groups: dict[Any, np.ndarray] | None = None
        self._groups_generation = -1
        self._modes: ModeSelection | None = None

    def select(self, vectors: np.ndarray, count: int, *, rng: np.random.Generator) -> ReplayChoice:
        """``count`` replay ids for a batch whose examples have ``vectors`` (b, dim)."""
        if count <= 0 or len(self.memory) == 0:
            return ReplayChoice([], [])
        mode = self.config.mode
        if mode in MODE_SELECTIONS:
            if self._modes is None:
                self._modes = ModeSelection(self)
            return self._modes.select(vectors, count, rng=rng)
        n_random = (
            count if mode == "random" else round(count * self.config.random_share) if mode == "hybrid" else 0
        )
        chosen: dict[int, float] = {}
        meta: dict[int, dict[str, Any]] = {}
        if count - n_random > 0:
            self._nearest(vectors, count - n_random, chosen, meta, rng)
        # Whatever retrieval could not fill (tiny memories, heavy filters) is filled at random.
        self._random(count - len(chosen), chosen, rng)
        missing_meta = [i for i in chosen if i not in meta]
        if missing_meta:
            for entry_id, row in self.memory.entries(missing_meta).items():
                meta[entry_id] = row.metadata()
        ids = [i for i in chosen if i in meta]
        return ReplayChoice(ids, [chosen[i] for i in ids], {i: meta[i] for i in ids})

    def _nearest(
        self,
        vectors: np.ndarray,
        want: int,
        chosen: dict[int, float],
        meta: dict[int, dict[str, Any]],
        rng: np.random.Generator,
    ) -> None:
        # Round-robin over the batch by rank, in a seeded order, so every new example contributes its
        # nearest neighbours before any contributes its second-nearest. Only the rows that round-robin
        # can reach are searched (twice the slots, for de-duplication): the search is the per-step cost
        # of replay, and a batch of 24 with 4 retrieval slots needs 8 queries, not 24.
        order = rng.permutation(len(vectors))[: min(len(vectors), max(8, 2 * want))]
        with faiss_threads(self.config.search_threads):
            hits = self.memory.search_vectors(vectors[order], self.config.k, where=self.eligible)
        # An entry that matches a searched row exactly is that row's own stored copy: never replay it.
        # (Copies of the current task's rows are excluded by the task filter in the first place.)
        own = {hit.id for row in hits for hit in row if hit.score >= _SELF_MATCH}
        for rank in range(self.config.k):
            for row in hits:  # already in the seeded order
                if rank < len(row):
                    hit = row[rank]
                    if hit.id in own or hit.id in chosen:
                        continue
                    chosen[hit.id] = hit.score
                    meta[hit.id] = hit.metadata
                    if len(chosen) >= want:
                        return

    def _random(self, want: int, chosen: dict[int, float], rng: np.random.Generator) -> None:
        """Add up to ``want`` random eligible ids; with ``balance="class"`` the draws cycle through the
        labels in a seeded order, so every label gets its share before any gets a second one."""
        if want <= 0:
            return
        groups = self._eligible_groups()
        pools = [groups[key] for key in groups]
        if not pools:
            return
        order = [pools[i] for i in rng.permutation(len(pools))] if self.config.balance == "class" else pools
        added = 0
        misses = [0] * len(order)
        while added < want and min(misses) < 8:
            progressed = False
            for slot, members in enumerate(order):
                if added >= want:
                    break
                if misses[slot] >= 8:
                    continue
                entry_id = int(members[int(rng.integers(len(members)))])
                if entry_id in chosen:
                    # Small or nearly exhausted classes: give up on them after a few collisions.
                    misses[slot] += 1
                    continue
                chosen[entry_id] = float("nan")
                added += 1
                progressed = True
            if not progressed and all(m >= 8 for m in misses):
                break

    def _eligible_groups(self) -> dict[Any, np.ndarray]:
        """Eligible ids by label (or all in one group), cached per memory generation."""
        if self.memory.read_only:
            self.memory.refresh()
        if self._groups is None or self._groups_generation != self.memory.generation:
            if self.config.balance == "class":
                raw = self.memory.group_ids("label", where=self.eligible)
            else:
                raw = {None: self.memory.ids(self.eligible)}
            self._groups = {k: np.asarray(v, dtype=np.int64) for k, v in raw.items() if v}
            self._groups_generation = self.memory.generation
        return self._groups
