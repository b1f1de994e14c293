"""``generative``: the replay share is filled with examples of old classes that a generator wrote.

Its replay is not chosen by a selector: ``rehearsal.replay.generative.GenerativeCollator`` draws it from a
pool written before the phase, and the memory is not searched. The mode is registered so that its name
resolves like every other; a selector or a ``RehearsalCollator`` asked to select in it refuses.
"""

from __future__ import annotations

import numpy as np

from rehearsal.errors import ConfigError
from rehearsal.replay.choice import ReplayChoice
from rehearsal.replay.modes.base import ReplayMode, register_mode

__all__ = ["GenerativeMode"]


@register_mode
class GenerativeMode(ReplayMode):
    """Replay written by a generator (``GenerativeCollator``), not selected from the memory."""

    name = "generative"
    refusal = (
        "replay mode 'generative' replays written examples, not memory entries: use "
        "rehearsal.replay.generative.GenerativeCollator"
    )

    def select(self, vectors: np.ndarray, count: int, *, rng: np.random.Generator) -> ReplayChoice:
        raise ConfigError(self.refusal)
