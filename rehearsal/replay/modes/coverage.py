"""``coverage``: a floor that visits every old group on a bounded schedule, the rest nearest neighbours.

``coverage_share`` of the replay is the floor: one random member from each of the next old groups
(``group_by``) in a fixed cyclic order, so every group is replayed within ``ceil(groups / floor slots)``
batches. The rest are nearest neighbours, every query's nearest before any query's second, or, with
``coverage_quotas`` set, split over the old tasks by their similarity to the batch: ``"distance"`` gives
more to the tasks farthest from it (as InsCL does), ``"similarity"`` to the nearest.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from rehearsal.config import ReplayConfig
from rehearsal.replay.modes.base import Picks, register_mode
from rehearsal.replay.modes.spreading import SpreadingMode
from rehearsal.store.types import Hit

if TYPE_CHECKING:
    from rehearsal.memory.facade import RehearsalMemory

__all__ = ["CoverageMode", "narrow"]


def narrow(where: Mapping[str, Any] | None, field: str, value: Any) -> dict[str, Any]:
    """``where`` AND ``field == value`` (a filter may hold one condition per field, so merge them)."""
    out = dict(where or {})
    current = out.get(field)
    if current is None:
        out[field] = value
    elif isinstance(current, Mapping) and "$eq" not in current:
        out[field] = {**current, "$eq": value}
    # Otherwise the field is already pinned to one value, which the group (drawn under it) must equal.
    return out


@register_mode
class CoverageMode(SpreadingMode):
    """The floor, then nearest neighbours; holds its selector's visiting schedule of the old groups."""

    name = "coverage"

    def __init__(
        self, memory: RehearsalMemory, config: ReplayConfig, *, eligible: Mapping[str, Any] | None
    ) -> None:
        super().__init__(memory, config, eligible=eligible)
        self._cycle: list[Any] = []  # the old groups in their seeded visiting order
        self._cursor = 0
        self._cycle_generation = -1

    def spread(
        self, vectors: np.ndarray, hits: list[list[Hit]], count: int, picks: Picks, rng: np.random.Generator
    ) -> None:
        self._floor(count, picks, rng)
        if self.config.coverage_quotas == "none":
            rank_major(hits, count, picks)
        else:
            self._task_quotas(vectors, count, picks)

    def _floor(self, count: int, picks: Picks, rng: np.random.Generator) -> None:
        """One random member from each of the next old groups in the cycle, so every group is replayed at
        least once in any ``ceil(groups / slots)`` consecutive batches."""
        slots = floor_slots(self.config, count)
        groups = self.groups.by(self.config.group_by)
        if slots == 0 or not groups:
            return
        if self._cycle_generation != self.memory.generation or set(self._cycle) != set(groups):
            # The order is drawn once (from the first batch's seeded generator) and then kept, so the
            # bound holds across batches and epochs; a change of the memory starts a new cycle.
            keys = sorted(groups, key=repr)
            self._cycle = [keys[i] for i in rng.permutation(len(keys))]
            self._cursor, self._cycle_generation = 0, self.memory.generation
        for _ in range(min(slots, len(self._cycle))):
            group = self._cycle[self._cursor % len(self._cycle)]
            self._cursor += 1
            members = groups[group]
            free = members[~np.isin(members, [*picks.scores, *picks.own])]
            if len(free):
                picks.take_random(int(free[int(rng.integers(len(free)))]))

    def _task_quotas(self, vectors: np.ndarray, count: int, picks: Picks) -> None:
        """The nearest-neighbour share split over the old tasks by their similarity to the batch (the mean
        of each query's best score in the task); each task's quota is filled with its own nearest entries."""
        want = count - len(picks)
        tasks = sorted(self.memory.group_ids("task", where=self.eligible), key=repr)
        if want <= 0 or not tasks:
            return
        per_task = {t: self.search(vectors, narrow(self.eligible, "task", t)) for t in tasks}
        similarity = np.asarray(
            [
                np.mean([row[0].score for row in per_task[t] if row]) if any(per_task[t]) else 0.0
                for t in tasks
            ]
        )
        weights = 1.0 - similarity if self.config.coverage_quotas == "distance" else similarity
        weights = np.clip(weights, 1e-6, None)
        for task, quota in zip(tasks, apportion(want, weights), strict=True):
            rank_major(per_task[task], len(picks) + quota, picks)


def floor_slots(config: ReplayConfig, count: int) -> int:
    """The floor's share of ``count`` slots: at least one when ``coverage_share`` is set, at most all."""
    if not config.coverage_share:
        return 0
    return min(count, max(1, round(count * config.coverage_share)))


def rank_major(hits: list[list[Hit]], want: int, picks: Picks) -> None:
    """Add hits until ``picks`` holds ``want``: every query's nearest before any query's second."""
    depth = max((len(row) for row in hits), default=0)
    for rank in range(depth):
        for row in hits:
            if len(picks) >= want:
                return
            if rank < len(row) and picks.free(row[rank].id):
                picks.take(row[rank])


def apportion(total: int, weights: np.ndarray) -> list[int]:
    """``total`` split in proportion to ``weights`` (largest remainders; ties to the earlier entry)."""
    share = total * weights / weights.sum()
    base = np.floor(share).astype(int)
    order = sorted(range(len(weights)), key=lambda i: (-(share[i] - base[i]), i))
    for i in order[: total - int(base.sum())]:
        base[i] += 1
    return [int(b) for b in base]
