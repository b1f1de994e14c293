"""rehearsal: retrieval-augmented rehearsal for continual fine-tuning of language models.

The Trainer integration (``RehearsalCollator``, ``RehearsalCallback``, ``embed_dataset``) imports
transformers, so it is loaded on first access rather than with the package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rehearsal.catalog import Hit
from rehearsal.config import ReplayConfig
from rehearsal.crypto import KeyRing
from rehearsal.datasets import TaskStream, load_jsonl_stream, load_wordnet_stream
from rehearsal.embedding import Encoder, SentenceTransformerEncoder, load_encoder
from rehearsal.errors import (
    ConfigError,
    DimensionMismatchError,
    EncoderMismatchError,
    IntegrityError,
    KeyManagementError,
    MissingKeyError,
    NotFoundError,
    ReadOnlyError,
    RehearsalError,
    StoreFormatError,
    StoreLockedError,
    ValidationError,
    WrongKeyError,
)
from rehearsal.memory import RehearsalMemory
from rehearsal.metrics import AccuracyMatrix, RunCost
from rehearsal.policies import AdmissionPolicy, ClassBalanced, KeepAll, Priority, Reservoir, make_policy

if TYPE_CHECKING:
    from rehearsal.hf import RehearsalCallback, RehearsalCollator, embed_dataset

__version__ = "0.1.0"

_LAZY = {
    "RehearsalCallback": "rehearsal.hf",
    "RehearsalCollator": "rehearsal.hf",
    "embed_dataset": "rehearsal.hf",
}

__all__ = [
    "AccuracyMatrix",
    "AdmissionPolicy",
    "ClassBalanced",
    "ConfigError",
    "DimensionMismatchError",
    "Encoder",
    "EncoderMismatchError",
    "Hit",
    "IntegrityError",
    "KeepAll",
    "KeyManagementError",
    "KeyRing",
    "MissingKeyError",
    "NotFoundError",
    "Priority",
    "ReadOnlyError",
    "RehearsalCallback",
    "RehearsalCollator",
    "RehearsalError",
    "RehearsalMemory",
    "ReplayConfig",
    "Reservoir",
    "RunCost",
    "SentenceTransformerEncoder",
    "StoreFormatError",
    "StoreLockedError",
    "TaskStream",
    "ValidationError",
    "WrongKeyError",
    "__version__",
    "embed_dataset",
    "load_encoder",
    "load_jsonl_stream",
    "load_wordnet_stream",
    "make_policy",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rehearsal' has no attribute {name!r}")
