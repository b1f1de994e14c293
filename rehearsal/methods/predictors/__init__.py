"""Predictors over the memory: the model's head, or the memory's examples seen through the fine-tuned encoder.

``PREDICTORS`` (the registry) names them: ``head``, ``ncm`` (nearest class mean), ``knn`` (distance-weighted
neighbours), ``lda`` (shared-covariance discriminant), ``local`` (per-query adaptation of the head).
``MemoryClassifier`` fits one on a memory and predicts texts with it.
"""

from rehearsal.methods.predictors import head, knn, lda, local, ncm  # noqa: F401  (registers them)
from rehearsal.methods.predictors.base import (
    PREDICTORS,
    FeaturePredictor,
    load_predictor,
    make_predictor,
    register_predictor,
    save_predictor,
)
from rehearsal.methods.predictors.classifier import MemoryClassifier
from rehearsal.methods.predictors.features import encoder_features
from rehearsal.methods.predictors.memory_vote import memory_vote
from rehearsal.methods.predictors.sample import memory_sample, sample_ids

__all__ = [
    "PREDICTORS",
    "FeaturePredictor",
    "MemoryClassifier",
    "encoder_features",
    "load_predictor",
    "make_predictor",
    "memory_sample",
    "memory_vote",
    "register_predictor",
    "sample_ids",
    "save_predictor",
]
