"""``hybrid``: ``random_share`` of the replay drawn at random from the whole eligible memory (class by
class with ``balance="class"``), so that old tasks far from the new data are not starved; the rest are
the batch's nearest neighbours, as in ``retrieval``.
"""

from __future__ import annotations

from rehearsal.replay.modes.base import register_mode
from rehearsal.replay.modes.retrieval import RetrievalMode

__all__ = ["HybridMode"]


@register_mode
class HybridMode(RetrievalMode):
    """Retrieval for ``1 - random_share`` of the slots, the random draw for the rest."""

    name = "hybrid"

    def random_slots(self, count: int) -> int:
        return round(count * self.config.random_share)
