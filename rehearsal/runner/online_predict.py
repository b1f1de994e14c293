"""Predicting through the memory in an online run (``prediction`` other than ``"head"``).

The predictor (``rehearsal.methods.predictors``) is fitted on the memory's entries with the model as it is
at the time, and refitted at the start of the first step of every window of ``streaming.refit_every``
steps (before that step's probes, so a refit counts as prediction time, not probe time), and whenever the
memory holds a class the fit has not seen (so the second batch of a new class can already be
answered through the memory). Both triggers depend only on the step and the memory's contents, so a run
resumed from a checkpoint (taken on a multiple of ``refit_every``, which the config checks) refits where
the uninterrupted run did and gives the same figures. Until the memory holds anything (the first batch),
the head answers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from rehearsal.memory.facade import RehearsalMemory
from rehearsal.methods.predictors import MemoryClassifier
from rehearsal.runner.config import RunConfig

__all__ = ["OnlinePredictor"]


class OnlinePredictor:
    """The run's memory predictor and when it was last fitted."""

    def __init__(self, config: RunConfig, memory: RehearsalMemory) -> None:
        self.config, self.memory = config, memory
        self.classifier: MemoryClassifier | None = None
        self.window: int | None = None  # the refit window of the last fit
        self.classes: set[int] = set()
        self.fits = 0

    def predict(
        self, model: Any, tokenizer: Any, step: int, texts: Sequence[str], head: Callable[[], np.ndarray]
    ) -> np.ndarray:
        """Labels of ``texts`` through the memory at ``step`` (``head()`` while the memory is empty)."""
        if not self.refresh(model, tokenizer, step):
            return head()
        assert self.classifier is not None  # refreshed just above
        return self.classifier.predict(list(texts))

    def refresh(self, model: Any, tokenizer: Any, step: int) -> bool:
        """Refit if ``step`` opens a new window or the memory holds a class the fit has not seen; False
        while the memory is empty (nothing to fit on)."""
        if len(self.memory) == 0:
            return False
        held = {int(label) for label in self.memory.group_ids("label")}
        window = step // self.config.streaming.refit_every
        if self.classifier is None or window != self.window or not held <= self.classes:
            self._fit(model, tokenizer, window, held)
        return True

    def _fit(self, model: Any, tokenizer: Any, window: int, held: set[int]) -> None:
        c = self.config
        self.classifier = MemoryClassifier(
            model,
            tokenizer,
            self.memory,
            predictor=c.prediction,
            per_class=c.prediction_per_class,
            seed=[c.seed, window, len(held)],
            batch_size=c.eval_batch_size,
            max_length=c.max_length,
        ).fit(sorted(held))
        self.window, self.classes = window, held
        self.fits += 1
