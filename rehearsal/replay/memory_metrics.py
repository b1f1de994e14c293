"""``compute_metrics`` for a Trainer: the head's accuracy and the memory predictor's, side by side.

    clf = rh.MemoryClassifier(model, tokenizer, memory, predictor="ncm")
    trainer = Trainer(..., eval_dataset=test, compute_metrics=rh.memory_compute_metrics(clf, test["text"]))
    trainer.evaluate()   # {"eval_accuracy": head, "eval_memory_accuracy": ncm over the memory, ...}

The Trainer hands ``compute_metrics`` the head's logits and the labels, never the texts, so the texts of
the evaluation set are given once here, in the order the Trainer evaluates them (it does not shuffle
evaluation data). The predictor is refitted on the memory before each evaluation by default, so it reads
the weights as trained so far.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from rehearsal.errors import ValidationError
from rehearsal.methods.predictors import MemoryClassifier

__all__ = ["memory_compute_metrics"]


def memory_compute_metrics(
    classifier: MemoryClassifier, texts: Sequence[str], *, refit: bool = True
) -> Callable[[Any], dict[str, float]]:
    """A ``compute_metrics`` giving ``accuracy`` (the head's argmax) and ``memory_accuracy`` (``classifier``'s
    predictor) on the evaluation set whose texts are ``texts``."""
    fixed = list(texts)

    def compute(prediction: Any) -> dict[str, float]:
        logits = (
            prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        )
        labels = np.asarray(prediction.label_ids)
        if len(labels) != len(fixed):
            raise ValidationError(
                f"the evaluation set has {len(labels)} rows, memory_compute_metrics was given {len(fixed)} "
                "texts; pass the evaluation dataset's own text column"
            )
        if refit:
            classifier.fit()
        memory = classifier.predict(fixed)
        return {
            "accuracy": float(np.mean(np.asarray(logits).argmax(axis=-1) == labels)),
            "memory_accuracy": float(np.mean(memory == labels)),
        }

    return compute
