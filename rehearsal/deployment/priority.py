"""Priority replay for deployment updates: safety-tagged and rare-class entries get a reserved share.

The seed's buffer is "reservoir + priority for rare classes and safety incidents": an update's replay
is the usual selection (nearest neighbours plus a class-balanced random share) for most of each batch's
replay slots, and ``priority_share`` of them are drawn at random from the priority entries: those
carrying one of the deployment's ``safety_tags``, and those whose label is rare in the eligible memory
(fewer than ``rare_label_share`` times the mean entries per label). A plain selection would give them
only their share of the memory, which for a rare class or a handful of incidents is next to nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rehearsal.config import ReplayConfig
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.replay.choice import ReplayChoice
from rehearsal.replay.collator import RehearsalCollator
from rehearsal.replay.selector import ReplaySelector

__all__ = ["PriorityCollator", "PrioritySelector", "priority_ids", "rare_labels"]


def rare_labels(counts: Mapping[Any, int], rare_share: float) -> list[Any]:
    """Labels with fewer than ``rare_share`` x the mean count per label (none with a single label)."""
    if len(counts) < 2 or rare_share <= 0:
        return []
    mean = sum(counts.values()) / len(counts)
    return [label for label, n in counts.items() if n < rare_share * mean]


def priority_ids(
    memory: RehearsalMemory,
    where: Mapping[str, Any] | None,
    *,
    tags: Sequence[str],
    rare_share: float,
) -> list[int]:
    """Eligible ids (matching ``where``) that carry one of ``tags`` or a rare label, ascending."""
    base = dict(where or {})
    found: set[int] = set(memory.ids({**base, "tags": {"$in": list(tags)}})) if tags else set()
    groups = memory.group_ids("label", where=base)
    for label in rare_labels({k: len(v) for k, v in groups.items()}, rare_share):
        found.update(groups[label])
    return sorted(found)


class PrioritySelector(ReplaySelector):
    """A :class:`ReplaySelector` that fills ``share`` of each batch's replay from ``priority`` ids."""

    def __init__(
        self,
        memory: RehearsalMemory,
        config: ReplayConfig,
        *,
        eligible: Mapping[str, Any] | None,
        priority: Sequence[int],
        share: float,
    ) -> None:
        super().__init__(memory, config, eligible=eligible)
        self.priority = np.asarray(sorted(priority), dtype=np.int64)
        self.share = share

    def select(self, vectors: np.ndarray, count: int, *, rng: np.random.Generator) -> ReplayChoice:
        reserved = min(len(self.priority), round(count * self.share)) if count > 0 else 0
        base = super().select(vectors, count - reserved, rng=rng)
        if reserved == 0:
            return base
        taken = set(base.ids)
        # Enough draws that the ones the base selection already took can be skipped.
        draws = rng.choice(self.priority, size=min(len(self.priority), reserved + len(taken)), replace=False)
        picks = [int(i) for i in draws if int(i) not in taken][:reserved]
        rows = self.memory.entries(picks)
        picks = [i for i in picks if i in rows]
        metadata = {**base.metadata, **{i: rows[i].metadata() for i in picks}}
        return ReplayChoice([*base.ids, *picks], [*base.scores, *[float("nan")] * len(picks)], metadata)


class PriorityCollator(RehearsalCollator):
    """A :class:`RehearsalCollator` whose selection reserves a share for priority entries, and which
    counts what it replays (``replayed``, ``priority_replayed``) for the update's metrics."""

    def __init__(self, *args: Any, priority: Sequence[int], share: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.priority = sorted(priority)
        self.share = share
        self.replayed: Counter[int] = Counter()

    def _get_selector(self) -> ReplaySelector:
        # The parent opens (or reopens, in a new process) the memory; its plain selector is swapped once.
        selector = super()._get_selector()
        if not isinstance(selector, PrioritySelector):
            selector = PrioritySelector(
                selector.memory, self.config, eligible=self.eligible, priority=self.priority, share=self.share
            )
            self._selector = selector
        return selector

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> Any:
        self.last_replay_ids = []
        batch = super().__call__(features)
        self.replayed.update(self.last_replay_ids)
        return batch

    def counts(self) -> dict[str, int]:
        """How many replay rows were drawn in all, and how many of them were priority entries."""
        wanted = set(self.priority)
        return {
            "replayed": sum(self.replayed.values()),
            "priority_replayed": sum(n for i, n in self.replayed.items() if i in wanted),
            "priority_entries": len(self.priority),
        }
