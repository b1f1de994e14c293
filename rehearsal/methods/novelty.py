"""How far new data lies from everything a memory holds: the novelty score behind expert growth.

The raw signal is each new example's cosine distance to its nearest memory entry. A distance means
nothing on its own (a memory of tweets is denser than one of editorials), so the score is calibrated on
the memory itself: a sample of the memory's entries gives their *leave-one-out* nearest-neighbour
distances (each entry's distance to its nearest other entry), and the score of a batch is the share of
those calibration distances that lie below the batch's median distance::

    score = mean(loo_distances < median(new_distances))   # in [0, 1]

Data drawn like the memory's scores about 0.5 (its median sits mid-distribution); data from a domain the
memory has never seen sits beyond most of the memory's own distances and scores near 1. Measured on the
bundled sentiment stream (MiniLM, 120 entries per known domain): a held-back domain scored 0.79-0.94,
more data from a known domain 0.26-0.78 (editorials, the most varied domain, scored highest), so the
default threshold is 0.85.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np

from rehearsal.errors import ConfigError, ValidationError

if TYPE_CHECKING:
    from rehearsal.memory.facade import RehearsalMemory

__all__ = ["Novelty", "novelty"]


@dataclasses.dataclass(frozen=True)
class Novelty:
    """A batch's novelty against a memory (see the module docstring)."""

    score: float  # share of the memory's leave-one-out NN distances below the batch's median NN distance
    threshold: float
    median_distance: float  # the batch's median cosine distance to its nearest memory entry
    calibration_median: float  # the memory's median leave-one-out NN distance
    calibration_size: int  # memory entries the calibration used

    @property
    def novel(self) -> bool:
        return self.score > self.threshold

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "novel": self.novel}


def _nearest_distances(
    memory: RehearsalMemory, vectors: np.ndarray, *, skip: list[int] | None = None
) -> np.ndarray:
    """(n,) cosine distance of each row to its nearest memory entry (not counting ``skip[i]``, its own id)."""
    hits = memory.search_vectors(vectors, 2 if skip is not None else 1)
    out = np.empty(len(vectors), dtype=np.float64)
    for i, row in enumerate(hits):
        others = [h for h in row if skip is None or h.id != skip[i]]
        out[i] = 1.0 - others[0].score if others else 2.0
    return out


def novelty(
    memory: RehearsalMemory,
    vectors: np.ndarray,
    *,
    threshold: float = 0.85,
    calibration_size: int = 500,
    rng: np.random.Generator,
) -> Novelty:
    """Score ``vectors`` (n, dim), unit rows from ``memory``'s encoder, against ``memory``.

    The calibration embeds a random sample of ``calibration_size`` memory entries (their texts, through
    the memory's encoder) and searches each against the memory, skipping itself.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"'threshold' must be in [0, 1], got {threshold!r}")
    if memory.embedding_only:
        raise ConfigError("the novelty calibration re-embeds memory texts; an embedding-only memory has none")
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) == 0:
        raise ValidationError(
            f"novelty needs a non-empty (n, dim) batch of vectors, got shape {vectors.shape}"
        )
    ids = memory.ids()
    if len(ids) < 2:
        raise ValidationError(f"novelty is calibrated on the memory's own entries; it holds {len(ids)}")
    sample = sorted(int(i) for i in rng.choice(ids, size=min(calibration_size, len(ids)), replace=False))
    calibration = memory.encoder.encode(memory.get_texts(sample))
    loo = _nearest_distances(memory, np.asarray(calibration, dtype=np.float32), skip=sample)
    new = _nearest_distances(memory, vectors)
    median = float(np.median(new))
    return Novelty(
        score=float(np.mean(loo < median)),
        threshold=float(threshold),
        median_distance=round(median, 6),
        calibration_median=round(float(np.median(loo)), 6),
        calibration_size=len(sample),
    )
