"""``MemoryClassifier``: a fine-tuned sequence classifier that predicts through a predictor over the memory.

    clf = rh.MemoryClassifier(model, tokenizer, memory, predictor="ncm").fit()
    labels = clf.predict(["a text"])                     # (n,) int64 label ids
    clf.save("out/predictor", keys=keys)
    clf = rh.MemoryClassifier.load("out/predictor", model, tokenizer, memory, keys=keys)

``fit`` draws up to ``per_class`` memory entries of every class (all with None, the default and what the
shared-covariance ``lda`` needs to do its best; the memory's labels must
be the model's label ids), embeds them with the model's own encoder (the head's input features) and fits
the predictor. A saved classifier names the entries it was fitted on; loading it against a memory from
which any of them was deleted or forgotten is refused, so an erased example never shapes a prediction.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from rehearsal._files import atomic_write
from rehearsal.errors import ConfigError, StoreFormatError
from rehearsal.methods.calibration import classification_head
from rehearsal.methods.predictors.base import FeaturePredictor, load_predictor, make_predictor, save_predictor
from rehearsal.methods.predictors.features import encoder_features
from rehearsal.methods.predictors.sample import sample_ids

if TYPE_CHECKING:
    from rehearsal.crypto.keys import KeyRing
    from rehearsal.memory.facade import RehearsalMemory

__all__ = ["MemoryClassifier"]

_FITTED_ON = "fitted_on.json"


class MemoryClassifier:
    """``model`` (a sequence classifier) predicting through ``predictor`` fitted on ``memory``'s examples."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        memory: RehearsalMemory,
        predictor: str | FeaturePredictor = "ncm",
        *,
        per_class: int | None = None,
        seed: Sequence[int] | int = 0,
        batch_size: int = 64,
        max_length: int = 64,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        if per_class is not None and (
            isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1
        ):
            raise ConfigError(f"'per_class' must be a positive int or None, got {per_class!r}")
        self.model, self.tokenizer, self.memory = model, tokenizer, memory
        self.predictor = (
            predictor
            if isinstance(predictor, FeaturePredictor)
            else make_predictor(predictor, **dict(options or {}))
        )
        self.per_class = per_class
        self.seed = [seed] if isinstance(seed, int) else list(seed)
        self.batch_size, self.max_length = batch_size, max_length
        self.fitted_on: list[int] = []

    def __repr__(self) -> str:
        return f"MemoryClassifier(predictor={self.predictor.name!r}, fitted_on={len(self.fitted_on)} entries)"

    def features(self, texts: Sequence[str]) -> torch.Tensor:
        """(n, d): the head-input features of ``texts`` from the model as it is now."""
        return encoder_features(
            self.model, self.tokenizer, list(texts), batch_size=self.batch_size, max_length=self.max_length
        )

    def fit(self, classes: Sequence[int] | None = None) -> MemoryClassifier:
        """Fit on the memory's entries of ``classes`` (default: every label it holds); returns self."""
        wanted = sorted(self.memory.group_ids("label")) if classes is None else sorted(set(classes))
        ids, labels = sample_ids(self.memory, wanted, self.per_class, seed=self.seed)
        if not ids:
            raise ConfigError(f"the memory holds no entries of classes {wanted[:10]}; nothing to fit on")
        features = self.features(self.memory.get_texts(ids))
        self.fit_features(features, labels, ids)
        return self

    def fit_features(self, features: torch.Tensor, labels: Sequence[int], ids: Sequence[int]) -> None:
        """Fit on precomputed ``features`` of the memory entries ``ids`` labelled ``labels``."""
        head = classification_head(self.model) if self.predictor.needs_head else None
        self.predictor.fit(features, labels, head=head)
        self.fitted_on = [int(i) for i in ids]

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        """(n,) int64 label ids of ``texts``."""
        return self.predictor.predict(self.features(texts))

    def predict_with_scores(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(labels (n,), scores (n,)): each text's label and the predictor's score for it (head, lda,
        local: a logit; ncm: a cosine; knn: the label's share of the weighted vote)."""
        if not self.predictor.fitted:
            raise ConfigError(f"predictor {self.predictor.name!r} is not fitted; call fit() first")
        if not len(texts):
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
        scores = self.predictor.scores(self.features(texts))
        best = scores.argmax(dim=1)
        labels = np.asarray(self.predictor.classes, dtype=np.int64)[best.numpy()]
        return labels, scores.gather(1, best[:, None]).squeeze(1).numpy()

    def save(self, folder: str | Path, *, keys: KeyRing | None = None) -> Path:
        """Write the fitted predictor and the ids it was fitted on into ``folder``."""
        out = save_predictor(self.predictor, folder, keys=keys)
        record = {"ids": self.fitted_on, "memory": self.memory.store_id}
        atomic_write(out / _FITTED_ON, json.dumps(record).encode())
        return out

    @classmethod
    def load(
        cls,
        folder: str | Path,
        model: Any,
        tokenizer: Any,
        memory: RehearsalMemory,
        *,
        keys: KeyRing | None = None,
        batch_size: int = 64,
        max_length: int = 64,
    ) -> MemoryClassifier:
        """The classifier saved in ``folder``, over ``memory``; refused if any entry it was fitted on is
        gone from the memory (deleted or forgotten since): fit it again then."""
        predictor = load_predictor(folder, keys=keys)
        try:
            record = json.loads((Path(folder) / _FITTED_ON).read_text(encoding="utf-8"))
            ids = [int(i) for i in record["ids"]]
            store = str(record["memory"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StoreFormatError(f"{str(folder)!r}: cannot read {_FITTED_ON}: {exc}") from None
        if store != memory.store_id:
            raise ConfigError(f"the predictor in {str(folder)!r} was fitted on another memory ({store})")
        gone = sorted(set(ids) - set(memory.entries(ids)))
        if gone:
            raise ConfigError(
                f"{len(gone)} memory entries the predictor in {str(folder)!r} was fitted on were deleted or "
                "forgotten since; fit it again"
            )
        clf = cls(model, tokenizer, memory, predictor, batch_size=batch_size, max_length=max_length)
        clf.fitted_on = ids
        return clf
