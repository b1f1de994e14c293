"""What a replay selection returns: the ids chosen for one batch, in order, with their similarity."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ReplayChoice"]


@dataclass(frozen=True)
class ReplayChoice:
    """Replay ids in the order chosen, with their similarity to the batch (NaN for random picks)."""

    ids: list[int]
    scores: list[float]
    metadata: dict[int, dict[str, Any]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)
