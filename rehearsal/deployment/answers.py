"""How a deployed version answers a batch of texts: its head over the labels it knows, or a predictor fitted
on the memory's examples of those labels (``DeploymentConfig.prediction``), each with a score per answer.

A memory predictor is fitted per route (the shared adapter, or each expert with its adapter active, since
each sees the texts through its own weights) when the route first answers, and fitted again whenever the
memory's generation has moved (an update added entries, or a tenant was forgotten: an erased example never
shapes an answer).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from rehearsal.methods.calibration import classification_head
from rehearsal.methods.inference import batch_logits
from rehearsal.methods.predictors import FeaturePredictor, encoder_features, make_predictor

if TYPE_CHECKING:
    from rehearsal.memory.facade import RehearsalMemory

__all__ = ["MemoryAnswers", "head_answers"]


def head_answers(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    allowed: Sequence[int],
    *,
    batch_size: int,
    max_length: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(label ids (n,), probabilities (n,)): the head's argmax over ``allowed`` outputs and its softmax
    probability among them."""
    logits = batch_logits(model, tokenizer, list(texts), batch_size=batch_size, max_length=max_length)
    probs = torch.softmax(logits[:, list(allowed)], dim=1)
    best = probs.argmax(dim=1)
    chosen: np.ndarray = np.asarray(allowed, dtype=np.int64)[best.numpy()]
    return chosen, probs.gather(1, best[:, None]).squeeze(1).numpy()


class MemoryAnswers:
    """Predictor ``name`` fitted on up to ``per_class`` memory entries of each label, one per route."""

    def __init__(self, name: str, per_class: int | None, seed: int) -> None:
        self.name, self.per_class, self.seed = name, per_class, seed
        self._fitted: dict[str, tuple[int, FeaturePredictor]] = {}

    def answer(
        self,
        model: Any,
        tokenizer: Any,
        texts: Sequence[str],
        labels: dict[str, int],
        memory: RehearsalMemory,
        route: str,
        *,
        batch_size: int,
        max_length: int,
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """(label ids, scores) of ``texts`` by the route's predictor over ``labels`` (name -> head output);
        None when the memory holds no example of any of them (the caller answers with the head)."""
        predictor = self._predictor(model, tokenizer, labels, memory, route, batch_size, max_length)
        if predictor is None:
            return None
        features = encoder_features(
            model, tokenizer, list(texts), batch_size=batch_size, max_length=max_length
        )
        scores = predictor.scores(features)
        best = scores.argmax(dim=1)
        chosen: np.ndarray = np.asarray(predictor.classes, dtype=np.int64)[best.numpy()]
        return chosen, scores.gather(1, best[:, None]).squeeze(1).numpy()

    def _predictor(
        self,
        model: Any,
        tokenizer: Any,
        labels: dict[str, int],
        memory: RehearsalMemory,
        route: str,
        batch_size: int,
        max_length: int,
    ) -> FeaturePredictor | None:
        fitted = self._fitted.get(route)
        if fitted is not None and fitted[0] == memory.generation:
            return fitted[1]
        rng = np.random.default_rng([self.seed, len(labels)])
        groups = memory.group_ids("label")
        ids: list[int] = []
        targets: list[int] = []
        for name in sorted(labels):
            members = groups.get(name, [])
            take = len(members) if self.per_class is None else min(len(members), self.per_class)
            ids.extend(int(i) for i in rng.choice(members, size=take, replace=False))
            targets.extend([labels[name]] * take)
        if not ids:
            return None
        features = encoder_features(
            model, tokenizer, memory.get_texts(ids), batch_size=batch_size, max_length=max_length
        )
        predictor = make_predictor(self.name)
        predictor.fit(features, targets, head=classification_head(model) if predictor.needs_head else None)
        self._fitted[route] = (memory.generation, predictor)
        return predictor
