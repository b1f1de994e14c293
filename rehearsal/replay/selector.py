"""Choosing the replay for a batch: nearest old neighbours, a random (class-balanced) share, or both.

The batch arrives with its precomputed vectors, so choosing replay costs one index search, never an
encoder forward pass. Only entries matching ``eligible`` (e.g. other tasks than the one being trained)
can be replayed, and near-exact copies of the batch's own examples are skipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from rehearsal.config import ReplayConfig
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.replay.choice import ReplayChoice
from rehearsal.replay.modes import ModeSelection

__all__ = ["ReplayChoice", "ReplaySelector"]  # ReplayChoice is re-exported for callers

# A stored vector this close to a batch vector is the batch's own example stored earlier.
_SELF_MATCH = 0.9999
# Modes chosen in rehearsal.replay.modes (in "mir" the count asked for is the candidate pool).
MODE_SELECTIONS = ("mir", "coverage", "diverse")


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
        own: set[int] = set()
        if count - n_random > 0:
            own = self._nearest(vectors, count - n_random, chosen, meta, rng)
        # Whatever retrieval could not fill (tiny memories, heavy filters) is filled at random, never
        # with the batch's own stored copies that the search found. (Random mode does no search: there
        # the task filter is what keeps the batch's own rows out.)
        self.fill_random(count - len(chosen), chosen, rng, skip=own)
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
    ) -> set[int]:
        """Fill ``chosen`` with nearest neighbours; returns the ids found to be the batch's own copies."""
        # Round-robin over the batch by rank, in a seeded order, so every new example contributes its
        # nearest neighbours before any contributes its second-nearest. Only the rows that round-robin
        # can reach are searched (twice the slots, for de-duplication): the search is the per-step cost
        # of replay, and a batch of 24 with 4 retrieval slots needs 8 queries, not 24.
        order = rng.permutation(len(vectors))[: min(len(vectors), max(8, 2 * want))]
        hits = self.memory.search_vectors(
            vectors[order], self.config.k, where=self.eligible, threads=self.config.search_threads
        )
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
                        return own
        return own

    def fill_random(
        self, want: int, chosen: dict[int, float], rng: np.random.Generator, *, skip: set[int]
    ) -> None:
        """Add up to ``want`` random eligible ids; with ``balance="class"`` the draws cycle through the
        labels in a seeded order, so every label gets its share before any gets a second one."""
        if want <= 0:
            return
        groups = self.eligible_groups()
        pools = [groups[key] for key in groups]
        if not pools:
            return
        order = [pools[i] for i in rng.permutation(len(pools))] if self.config.balance == "class" else pools
        # Each pool is drawn without replacement, so a draw never collides with an earlier one and the
        # count asked for is met whenever enough entries are eligible. At most len(chosen) + len(skip)
        # of a pool's draws can already be taken, so that many more than ``want`` always suffice.
        taken = len(chosen) + len(skip)
        draws = [iter(rng.choice(pool, size=min(len(pool), want + taken), replace=False)) for pool in order]
        added = 0
        while added < want and draws:
            live = []
            for draw in draws:  # one new entry per pool per round: every label gets its share first
                if added >= want:
                    break
                entry_id = next((int(i) for i in draw if int(i) not in chosen and int(i) not in skip), None)
                if entry_id is None:
                    continue  # this pool is exhausted
                chosen[entry_id] = float("nan")
                added += 1
                live.append(draw)
            draws = live if added < want else []

    def eligible_groups(self) -> dict[Any, np.ndarray]:
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
