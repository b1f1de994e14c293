"""``MemoryGuide``: keeps a generated example only where the memory says its class lives.

Each generation is embedded (the memory's own encoder, so its vectors compare with the stored ones) and
searched twice through the memory's index: among the stored vectors of the class it was asked for, and
among every other class's. It is kept when the mean cosine to its ``k`` nearest own-class vectors reaches
``min_similarity`` (inside the class's region), beats the mean over the ``k`` nearest other-class vectors by
``margin`` (away from the other classes), and no stored vector is as close as ``copy_cosine`` (a near
copy of a real example, which replay must not carry). The memory may be embedding-only: no text is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from rehearsal.memory.facade import RehearsalMemory

__all__ = ["REASONS", "GuideVerdict", "MemoryGuide"]

# Why a generation is rejected, in the order the rules are checked (the first that applies is counted).
REASONS = ("empty", "near_copy", "outside_class", "nearer_other_class")


@dataclass
class GuideVerdict:
    """Per generation: kept or not, the own-class and other-class mean cosines; rejections by reason."""

    keep: list[bool]
    own: np.ndarray  # (n,) mean cosine to the k nearest vectors of the asked class (-1: none stored)
    other: np.ndarray  # (n,) mean cosine to the k nearest vectors of the other classes (-1: none stored)
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def rejected(self) -> int:
        return sum(not k for k in self.keep)


class MemoryGuide:
    """Judges generations against the class regions of ``memory`` (metadata field ``label``)."""

    def __init__(
        self,
        memory: RehearsalMemory,
        *,
        k: int = 4,
        min_similarity: float = 0.3,
        margin: float = 0.0,
        copy_cosine: float = 0.95,
    ) -> None:
        self.memory = memory
        self.k = k
        self.min_similarity = min_similarity
        self.margin = margin
        self.copy_cosine = copy_cosine

    def judge(self, texts: Sequence[str], labels: Sequence[int]) -> GuideVerdict:
        """The verdict on ``texts`` written for class ids ``labels`` (same length)."""
        n = len(texts)
        own, other = np.full(n, -1.0), np.full(n, -1.0)
        closest = np.full(n, -1.0)
        filled = [i for i in range(n) if texts[i].strip()]
        if filled:
            vectors = np.asarray(self.memory.encoder.encode([texts[i] for i in filled]), dtype=np.float32)
            rows = {i: r for r, i in enumerate(filled)}
            for label in sorted({int(labels[i]) for i in filled}):
                members = [i for i in filled if int(labels[i]) == label]
                queries = vectors[[rows[i] for i in members]]
                mine = self.memory.search_vectors(queries, self.k, where={"label": label})
                theirs = self.memory.search_vectors(queries, self.k, where={"label": {"$ne": label}})
                for i, hits_own, hits_other in zip(members, mine, theirs, strict=True):
                    if hits_own:
                        own[i] = float(np.mean([h.score for h in hits_own]))
                    if hits_other:
                        other[i] = float(np.mean([h.score for h in hits_other]))
                    closest[i] = max([h.score for h in (*hits_own, *hits_other)], default=-1.0)
        keep: list[bool] = []
        reasons = dict.fromkeys(REASONS, 0)
        for i in range(n):
            reason = self._reason(bool(texts[i].strip()), own[i], other[i], closest[i])
            keep.append(reason is None)
            if reason is not None:
                reasons[reason] += 1
        return GuideVerdict(keep, own, other, reasons)

    def _reason(self, filled: bool, own: float, other: float, closest: float) -> str | None:
        if not filled:
            return "empty"
        if closest >= self.copy_cosine:
            return "near_copy"
        if own < self.min_similarity:
            return "outside_class"
        if other > -1.0 and own - other < self.margin:
            return "nearer_other_class"
        return None
