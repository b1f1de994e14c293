"""The replay modes that rank or spread what one search returns: ``mir`` (its candidate pool),
``coverage`` and ``diverse`` (see ``ReplayConfig``).

Nearest neighbours of a batch concentrate on the few old classes closest to the new data and starve the
rest (benchmarks/RESULTS.md: retrieval-only replay is ~9 points under random). Each mode here keeps the
search but breaks that concentration: MIR's pool spreads the neighbours over the old groups and adds a
class-balanced random fill for the trainer to rank by interference; ``coverage`` visits every old group
on a bounded schedule; ``diverse`` samples at random from the union of every new example's neighbours.

Every mode searches all of the batch's vectors once over the eligible entries (the cost of the
``retrieval`` mode), so the batch's own stored copies are always found and never replayed, and the
random parts go through ``ReplaySelector.fill_random`` (the class-balanced draw the other modes share).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from rehearsal.config import ReplayConfig
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.replay.choice import ReplayChoice
from rehearsal.store.types import Hit

__all__ = ["ModeSelection"]

# A stored vector this close to a batch vector is the batch's own example (same rule as replay.py).
_SELF_MATCH = 0.9999


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


class _Selector(Protocol):
    """What the modes use of the ``ReplaySelector`` that owns them."""

    memory: RehearsalMemory
    config: ReplayConfig
    eligible: dict[str, Any] | None

    def fill_random(
        self, want: int, chosen: dict[int, float], rng: np.random.Generator, *, skip: set[int]
    ) -> None: ...

    def eligible_groups(self) -> dict[Any, np.ndarray]: ...


class ModeSelection:
    """Chooses replay for one ``ReplaySelector`` in the modes above; holds the coverage schedule."""

    def __init__(self, selector: _Selector) -> None:
        self.selector = selector
        self.config = selector.config
        self._cycle: list[Any] = []  # coverage: the old groups in their seeded visiting order
        self._cursor = 0
        self._cycle_generation = -1
        self._groups: dict[Any, np.ndarray] = {}
        self._groups_generation = -1

    def select(self, vectors: np.ndarray, count: int, *, rng: np.random.Generator) -> ReplayChoice:
        """``count`` ids for a batch with ``vectors`` (b, dim); in ``mir`` mode ``count`` is the pool."""
        hits = self._search(vectors, self.config.k, self.selector.eligible)
        own = {hit.id for row in hits for hit in row if hit.score >= _SELF_MATCH}
        chosen: dict[int, float] = {}
        meta: dict[int, dict[str, Any]] = {}
        mode = self.config.mode
        if mode == "mir":
            n_near = count - round(count * self.config.random_share)
            self._spread_over_groups(hits, n_near, own, chosen, meta)
        elif mode == "coverage":
            self._floor(count, own, chosen, rng)
            if self.config.coverage_quotas == "none":
                _rank_major(hits, count, own, chosen, meta)
            else:
                self._task_quotas(vectors, count, own, chosen, meta)
        elif mode == "diverse":
            self._subsample_union(hits, count, own, chosen, meta, rng)
        else:
            raise ValueError(f"ModeSelection does not handle mode {mode!r}")
        self._fill(count, own, chosen, rng)
        return self._choice(chosen, meta)

    # -- the modes ---------------------------------------------------------------------------------
    def _spread_over_groups(
        self,
        hits: list[list[Hit]],
        want: int,
        own: set[int],
        chosen: dict[int, float],
        meta: dict[int, dict[str, Any]],
    ) -> None:
        """MIR's neighbours: the groups met in the hits take turns (nearest group first), each adding its
        next-nearest entry, so no single old class fills the pool."""
        by_group: dict[Any, list[Hit]] = {}
        for hit in sorted((h for row in hits for h in row), key=lambda h: (-h.score, h.id)):
            if hit.id not in own:
                by_group.setdefault(hit.metadata.get(self.config.group_by), []).append(hit)
        queues = list(by_group.values())  # dicts keep insertion order: nearest group first
        position = [0] * len(queues)
        while len(chosen) < want and any(p < len(q) for p, q in zip(position, queues, strict=True)):
            for g, queue in enumerate(queues):
                while position[g] < len(queue) and queue[position[g]].id in chosen:
                    position[g] += 1
                if position[g] < len(queue) and len(chosen) < want:
                    hit = queue[position[g]]
                    chosen[hit.id], meta[hit.id] = hit.score, hit.metadata
                    position[g] += 1

    def _floor(self, count: int, own: set[int], chosen: dict[int, float], rng: np.random.Generator) -> None:
        """One random member from each of the next old groups in a fixed cyclic order, so every group is
        replayed at least once in any ``ceil(groups / slots)`` consecutive batches."""
        slots = (
            min(count, max(1, round(count * self.config.coverage_share))) if self.config.coverage_share else 0
        )
        groups = self._eligible_by_group()
        if slots == 0 or not groups:
            return
        if self._cycle_generation != self.selector.memory.generation or set(self._cycle) != set(groups):
            # The order is drawn once (from the first batch's seeded generator) and then kept, so the
            # bound holds across batches and epochs; a change of the memory starts a new cycle.
            keys = sorted(groups, key=repr)
            self._cycle = [keys[i] for i in rng.permutation(len(keys))]
            self._cursor, self._cycle_generation = 0, self.selector.memory.generation
        for _ in range(min(slots, len(self._cycle))):
            group = self._cycle[self._cursor % len(self._cycle)]
            self._cursor += 1
            members = groups[group]
            free = members[~np.isin(members, [*chosen, *own])]
            if len(free):
                chosen[int(free[int(rng.integers(len(free)))])] = float("nan")

    def _task_quotas(
        self,
        vectors: np.ndarray,
        count: int,
        own: set[int],
        chosen: dict[int, float],
        meta: dict[int, dict[str, Any]],
    ) -> None:
        """The nearest-neighbour share split over the old tasks by their similarity to the batch (the mean
        of each query's best score in the task): ``distance`` gives more to far tasks (InsCL), ``similarity``
        to near ones. Each task's quota is filled with its own nearest entries."""
        want = count - len(chosen)
        tasks = sorted(self.selector.memory.group_ids("task", where=self.selector.eligible), key=repr)
        if want <= 0 or not tasks:
            return
        per_task = {
            t: self._search(vectors, self.config.k, narrow(self.selector.eligible, "task", t)) for t in tasks
        }
        similarity = np.asarray(
            [
                np.mean([row[0].score for row in per_task[t] if row]) if any(per_task[t]) else 0.0
                for t in tasks
            ]
        )
        weights = 1.0 - similarity if self.config.coverage_quotas == "distance" else similarity
        weights = np.clip(weights, 1e-6, None)
        for task, quota in zip(tasks, _apportion(want, weights), strict=True):
            before = len(chosen)
            _rank_major(per_task[task], before + quota, own, chosen, meta)

    def _subsample_union(
        self,
        hits: list[list[Hit]],
        count: int,
        own: set[int],
        chosen: dict[int, float],
        meta: dict[int, dict[str, Any]],
        rng: np.random.Generator,
    ) -> None:
        """CMR's indexed replay: every query's top-k, de-duplicated, then ``count`` of them at random."""
        best: dict[int, Hit] = {}
        for hit in (h for row in hits for h in row):
            if hit.id not in own and (hit.id not in best or hit.score > best[hit.id].score):
                best[hit.id] = hit
        union = sorted(best)  # sorted, so the draw depends on the seed only, not on the search's order
        for position in rng.permutation(len(union))[:count]:
            hit = best[union[int(position)]]
            chosen[hit.id], meta[hit.id] = hit.score, hit.metadata

    # -- shared pieces -------------------------------------------------------------------------------
    def _search(self, vectors: np.ndarray, k: int, where: Mapping[str, Any] | None) -> list[list[Hit]]:
        return self.selector.memory.search_vectors(
            vectors, k, where=where, threads=self.config.search_threads
        )

    def _fill(self, count: int, own: set[int], chosen: dict[int, float], rng: np.random.Generator) -> None:
        """Top ``chosen`` up to ``count`` with the class-balanced random draw, which skips the batch's own
        copies and delivers the count whenever the memory holds that many eligible entries."""
        self.selector.fill_random(count - len(chosen), chosen, rng, skip=own)

    def _eligible_by_group(self) -> dict[Any, np.ndarray]:
        """Eligible ids by ``group_by``, cached per memory generation (the floor reads it every batch)."""
        self.selector.eligible_groups()  # refreshes a read-only handle
        generation = self.selector.memory.generation
        if self._groups_generation != generation:
            raw = self.selector.memory.group_ids(self.config.group_by, where=self.selector.eligible)
            self._groups = {k: np.asarray(v, dtype=np.int64) for k, v in raw.items() if v}
            self._groups_generation = generation
        return self._groups

    def _choice(self, chosen: dict[int, float], meta: dict[int, dict[str, Any]]) -> ReplayChoice:
        missing = [i for i in chosen if i not in meta]
        if missing:
            for entry_id, row in self.selector.memory.entries(missing).items():
                meta[entry_id] = row.metadata()
        ids = [i for i in chosen if i in meta]
        return ReplayChoice(ids, [chosen[i] for i in ids], {i: meta[i] for i in ids})


def _rank_major(
    hits: list[list[Hit]], want: int, own: set[int], chosen: dict[int, float], meta: dict[int, dict[str, Any]]
) -> None:
    """Add hits until ``chosen`` holds ``want``: every query's nearest before any query's second."""
    depth = max((len(row) for row in hits), default=0)
    for rank in range(depth):
        for row in hits:
            if len(chosen) >= want:
                return
            if rank < len(row) and row[rank].id not in own and row[rank].id not in chosen:
                chosen[row[rank].id], meta[row[rank].id] = row[rank].score, row[rank].metadata


def _apportion(total: int, weights: np.ndarray) -> list[int]:
    """``total`` split in proportion to ``weights`` (largest remainders; ties to the earlier entry)."""
    share = total * weights / weights.sum()
    base = np.floor(share).astype(int)
    order = sorted(range(len(weights)), key=lambda i: (-(share[i] - base[i]), i))
    for i in order[: total - int(base.sum())]:
        base[i] += 1
    return [int(b) for b in base]
