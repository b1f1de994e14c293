"""The settings of an online run (``online = true`` in a run config; the table ``[streaming]``).

An online run sees the stream once, in small batches, and tests every batch before it trains on it::

    method = "random"
    online = true

    [streaming]
    batch_size = 8          # new examples per step
    probe_every = 10        # steps between probe evaluations (anytime metrics)
    probe_per_class = 2     # probe examples per class of each task, from its test split
    clip_norm = 1.0         # gradient clipping (None: off)

Streaming optimisation keeps the run's ``learning_rate`` constant (no schedule can assume a stream's
length); an optional re-warmup ramps it up again from ``1 / rewarmup_steps`` of itself when a batch's
novelty against the memory (``rehearsal.methods.novelty``) exceeds ``rewarmup_threshold``. This module
imports no torch: a config fails before anything heavy loads.
"""

from __future__ import annotations

import dataclasses

from rehearsal.config import ConfigMixin
from rehearsal.errors import ConfigError
from rehearsal.runner.methods import ONLINE_METHODS

__all__ = ["ONLINE_METHODS", "OnlineConfig"]

# The methods an online run can use are a column of the one method table (rehearsal.runner.methods).


def _int_at_least(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"'streaming.{name}' must be an int >= {minimum}, got {value!r}")


@dataclasses.dataclass
class OnlineConfig(ConfigMixin):
    """How an online run batches the stream, probes it, clips and re-warms (see the module docstring).

    ``refit_every`` is how many steps a memory predictor (``prediction`` other than ``"head"``) is used
    before it is fitted again (and it is refitted at once when the memory gains a class).
    ``checkpoint_every`` is the number of steps between the checkpoints a resumed run starts from (the
    weights, the optimizer, the random state and the position in the stream). ``probe_offline`` makes an
    offline run probe its phases too, every ``probe_every`` Trainer steps (``anytime.json`` in its folder).
    """

    batch_size: int = 8
    probe_every: int = 10
    probe_per_class: int = 2
    clip_norm: float | None = 1.0
    checkpoint_every: int = 50
    rewarmup_threshold: float | None = None
    rewarmup_steps: int = 10
    novelty_calibration: int = 64
    probe_offline: bool = False
    refit_every: int = 10

    def __post_init__(self) -> None:
        names = ("batch_size", "probe_every", "probe_per_class", "checkpoint_every", "rewarmup_steps")
        for name in (*names, "refit_every"):
            _int_at_least(name, getattr(self, name), 1)
        _int_at_least("novelty_calibration", self.novelty_calibration, 2)
        if not isinstance(self.probe_offline, bool):
            raise ConfigError(f"'streaming.probe_offline' must be true or false, got {self.probe_offline!r}")
        clip = self.clip_norm
        if clip is not None and (
            isinstance(clip, bool) or not isinstance(clip, (int, float)) or not 0 < float(clip) < float("inf")
        ):
            raise ConfigError(f"'streaming.clip_norm' must be a positive number or None, got {clip!r}")
        threshold = self.rewarmup_threshold
        if threshold is not None and (
            isinstance(threshold, bool)
            or not isinstance(threshold, (int, float))
            or not 0.0 <= float(threshold) <= 1.0
        ):
            raise ConfigError(f"'streaming.rewarmup_threshold' must be in [0, 1] or None, got {threshold!r}")
