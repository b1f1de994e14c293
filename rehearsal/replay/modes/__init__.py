"""Replay modes: one class per way of choosing the replay for a batch, and ``MODES``, their registry.

=============  ==============  ===========================================================================
mode           module          replay for a batch
=============  ==============  ===========================================================================
``random``     random.py       drawn at random, class by class (the default, and the measured best so far)
``retrieval``  retrieval.py    the batch's nearest old neighbours
``hybrid``     hybrid.py       ``random_share`` at random, the rest nearest neighbours
``mir``        mir.py          a candidate pool (neighbours spread over old groups + random) for the
                               trainer to rank by interference
``coverage``   coverage.py     a round-robin floor over the old groups, the rest nearest neighbours
``diverse``    diverse.py      a random subsample of the union of every example's neighbours
``generative`` generative.py   written by a generator (``GenerativeCollator``); not chosen here
=============  ==============  ===========================================================================

``base.py`` holds what they share (the search, the batch's own copies, the random fill, the metadata
fetch) and the registry; ``spreading.py`` the one-search template of mir, coverage and diverse.
``ReplaySelector`` looks its config's mode up here and delegates; a new mode is a class with
``@register_mode`` and its name added to ``rehearsal.config.REPLAY_MODES``.
"""

from rehearsal.replay.modes import (  # noqa: F401  (each module registers its mode)
    coverage,
    diverse,
    generative,
    hybrid,
    mir,
    random,
    retrieval,
)
from rehearsal.replay.modes.base import MODES, Picks, ReplayMode, mode_class, register_mode, selectable_mode

__all__ = ["MODES", "Picks", "ReplayMode", "mode_class", "register_mode", "selectable_mode"]
