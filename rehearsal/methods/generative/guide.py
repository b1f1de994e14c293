"""``MemoryGuide``: keeps a generated example only where the memory says its class lives.

Each generation is embedded (the memory's own encoder, so its vectors compare with the stored ones) and
searched twice through the memory's index: among the stored vectors of the class it was asked for, and
among every other class's. It is kept when the mean cosine to its ``k`` nearest own-class vectors reaches
``min_similarity`` (inside the class's region), beats the mean over the ``k`` nearest other-class vectors by
``margin`` (away from the other classes), and no stored vector is as close as ``copy_cosine`` (a near
copy of a real example, which replay must not carry). The memory may be embedding-only: no text is read.

The floor of "inside the class's region" is either one number for every class (``floor="absolute"``:
``min_similarity``) or each class's own (``floor="class"``): a low percentile of its real members' mean
cosine to their ``k`` nearest stored neighbours of the class, found through the memory's index
(``class_floors``). One absolute floor is too strict for classes whose members are spread out (WordNet's
abstract nouns: 182 of 224 generations rejected at 0.3) and too loose for tight ones; a generation is
asked to sit as deep inside its class as most of the class's real members do. Generations that pass
are ranked by how much nearer their own class they are than any other (own minus other), so the
replay slots fill with the clearest ones first (``ranked``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from rehearsal.errors import ConfigError, ValidationError
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.methods.generative.config import GenerativeConfig

__all__ = ["FLOORS", "REASONS", "GuideVerdict", "MemoryGuide"]

# Why a generation is rejected, in the order the rules are checked (the first that applies is counted).
REASONS = ("empty", "near_copy", "outside_class", "nearer_other_class")
FLOORS = ("class", "absolute")


@dataclass
class GuideVerdict:
    """Per generation: kept or not, the own-class and other-class mean cosines; rejections by reason."""

    keep: list[bool]
    own: np.ndarray  # (n,) mean cosine to the k nearest vectors of the asked class (-1: none stored)
    other: np.ndarray  # (n,) mean cosine to the k nearest vectors of the other classes (-1: none stored)
    reasons: dict[str, int] = field(default_factory=dict)
    floor: np.ndarray | None = None  # (n,) the own-class floor each generation was held to
    closest: np.ndarray | None = None  # (n,) cosine to the nearest stored vector of any class

    @property
    def rejected(self) -> int:
        return sum(not k for k in self.keep)

    @property
    def margins(self) -> np.ndarray:
        """Own minus other mean cosine per generation (own alone where no other class is stored)."""
        return np.where(self.other > -1.0, self.own - self.other, self.own)

    def ranked(self) -> list[int]:
        """Indices of the kept generations, clearest first (largest own-minus-other margin; ties keep
        their written order)."""
        kept = [i for i, ok in enumerate(self.keep) if ok]
        margins = self.margins
        return sorted(kept, key=lambda i: (-float(margins[i]), i))


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
        floor: str = "absolute",
        percentile: float = 10.0,
    ) -> None:
        if floor not in FLOORS:
            raise ConfigError(f"'floor' must be one of {FLOORS}, got {floor!r}")
        self.memory = memory
        self.k = k
        self.min_similarity = min_similarity
        self.margin = margin
        self.copy_cosine = copy_cosine
        self.floor = floor
        self.percentile = percentile
        self.floors: dict[int, float] = {}

    @classmethod
    def from_config(cls, memory: RehearsalMemory, config: GenerativeConfig) -> MemoryGuide:
        """The guide a generative config describes (``guide_k``, ``min_similarity``, ``margin``,
        ``copy_cosine``, ``guide_floor``, ``floor_percentile``): one place, so a run and a script that
        judge generations with the same config judge them alike."""
        return cls(
            memory,
            k=config.guide_k,
            min_similarity=config.min_similarity,
            margin=config.margin,
            copy_cosine=config.copy_cosine,
            floor=config.guide_floor,
            percentile=config.floor_percentile,
        )

    def class_floors(self, vectors: np.ndarray, labels: Sequence[int]) -> dict[int, float]:
        """Each class's floor, from its real members as stored in the memory: the ``percentile`` of the
        members' mean cosine to their ``k`` nearest other stored members of the class (searched through
        the memory's index; the member's own entry, its nearest hit, is left out). ``vectors`` are the
        members' stored vectors (the run passes the ones it has just added). A class with a single
        member keeps ``min_similarity``. The floors are remembered for ``judge``."""
        x = np.asarray(vectors, dtype=np.float32)
        if x.ndim != 2 or len(x) != len(labels):
            raise ValidationError(f"need one vector per label, got {x.shape} for {len(labels)} labels")
        for label in sorted({int(y) for y in labels}):
            rows = [i for i, y in enumerate(labels) if int(y) == label]
            hits = self.memory.search_vectors(x[rows], self.k + 1, where={"label": label})
            means = [float(np.mean([h.score for h in found[1:]])) for found in hits if len(found) > 1]
            if means:
                self.floors[label] = float(np.percentile(means, self.percentile))
        return dict(self.floors)

    def floor_of(self, label: int) -> float:
        """The own-class floor a generation of ``label`` must reach."""
        if self.floor == "class":
            return self.floors.get(int(label), self.min_similarity)
        return self.min_similarity

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
        floor = np.array([self.floor_of(int(y)) for y in labels], dtype=np.float64)
        for i in range(n):
            reason = self._reason(bool(texts[i].strip()), own[i], other[i], closest[i], floor[i])
            keep.append(reason is None)
            if reason is not None:
                reasons[reason] += 1
        return GuideVerdict(keep, own, other, reasons, floor, closest)

    def _reason(self, filled: bool, own: float, other: float, closest: float, floor: float) -> str | None:
        if not filled:
            return "empty"
        if closest >= self.copy_cosine:
            return "near_copy"
        if own < floor:
            return "outside_class"
        if other > -1.0 and own - other < self.margin:
            return "nearer_other_class"
        return None
