"""rehearsal: retrieval-augmented rehearsal for continual fine-tuning of language models.

The public names are those in ``__all__``; the subpackages (``store``, ``memory``, ``replay``, ``methods``,
``governance``, ``runner``, ``cli``) are the plumbing behind them. The Trainer integration
(``RehearsalCollator``, ``RehearsalCallback``, ``RehearsalTrainer``, ``embed_dataset``), a continual run
(``run``, ``RunResult``), ``EWC`` and the adapters (``TaskAdapters``, ``AdapterRouter``, ``TaskGate``)
import torch, transformers or peft, so they are loaded on first access rather than with the package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rehearsal.config import EWCConfig, LoRAConfig, ReplayConfig
from rehearsal.crypto.keys import KeyRing
from rehearsal.embedding import Encoder, SentenceTransformerEncoder, load_encoder
from rehearsal.errors import (
    CleanupError,
    ConfigError,
    DimensionMismatchError,
    EncoderMismatchError,
    IntegrityError,
    KeyManagementError,
    MissingKeyError,
    NotFoundError,
    ReadOnlyError,
    RehearsalError,
    StorageError,
    StoreFormatError,
    StoreLockedError,
    UpdateBlockedError,
    ValidationError,
    WrongKeyError,
)
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.memory.policies import (
    AdmissionPolicy,
    ClassBalanced,
    KeepAll,
    Priority,
    Reservoir,
    make_policy,
)
from rehearsal.runner.config import RunConfig
from rehearsal.runner.metrics import AccuracyMatrix, RunCost
from rehearsal.runner.tasks import TaskStream, load_jsonl_stream, load_wordnet_stream
from rehearsal.store.types import Hit
from rehearsal.threads import ThreadPlan, size_thread_pools

if TYPE_CHECKING:
    from rehearsal.deployment.update import update
    from rehearsal.methods.adapters import TaskAdapters
    from rehearsal.methods.ewc import EWC
    from rehearsal.methods.predictors import MemoryClassifier
    from rehearsal.methods.router import AdapterRouter, TaskGate
    from rehearsal.replay.callback import RehearsalCallback
    from rehearsal.replay.collator import RehearsalCollator, embed_dataset
    from rehearsal.replay.memory_metrics import memory_compute_metrics
    from rehearsal.replay.trainer import RehearsalTrainer
    from rehearsal.runner.loop import run
    from rehearsal.runner.results import RunResult
    from rehearsal.runner.trainer_matrix import AccuracyMatrixCallback

__version__ = "0.1.0"

_LAZY = {
    "AdapterRouter": "rehearsal.methods.router",
    "EWC": "rehearsal.methods.ewc",
    "TaskAdapters": "rehearsal.methods.adapters",
    "TaskGate": "rehearsal.methods.router",
    "MemoryClassifier": "rehearsal.methods.predictors",
    "memory_compute_metrics": "rehearsal.replay.memory_metrics",
    "RehearsalCallback": "rehearsal.replay.callback",
    "RehearsalCollator": "rehearsal.replay.collator",
    "embed_dataset": "rehearsal.replay.collator",
    "RehearsalTrainer": "rehearsal.replay.trainer",
    "RunResult": "rehearsal.runner.results",
    "AccuracyMatrixCallback": "rehearsal.runner.trainer_matrix",
    "run": "rehearsal.runner.loop",
    "update": "rehearsal.deployment.update",
}

__all__ = [
    "EWC",
    "AccuracyMatrix",
    "AccuracyMatrixCallback",
    "AdapterRouter",
    "AdmissionPolicy",
    "ClassBalanced",
    "CleanupError",
    "ConfigError",
    "DimensionMismatchError",
    "EWCConfig",
    "Encoder",
    "EncoderMismatchError",
    "Hit",
    "IntegrityError",
    "KeepAll",
    "KeyManagementError",
    "KeyRing",
    "LoRAConfig",
    "MemoryClassifier",
    "MissingKeyError",
    "NotFoundError",
    "Priority",
    "ReadOnlyError",
    "RehearsalCallback",
    "RehearsalCollator",
    "RehearsalError",
    "RehearsalMemory",
    "RehearsalTrainer",
    "ReplayConfig",
    "Reservoir",
    "RunConfig",
    "RunCost",
    "RunResult",
    "SentenceTransformerEncoder",
    "StorageError",
    "StoreFormatError",
    "StoreLockedError",
    "TaskAdapters",
    "TaskGate",
    "TaskStream",
    "ThreadPlan",
    "UpdateBlockedError",
    "ValidationError",
    "WrongKeyError",
    "__version__",
    "embed_dataset",
    "load_encoder",
    "load_jsonl_stream",
    "load_wordnet_stream",
    "make_policy",
    "memory_compute_metrics",
    "run",
    "size_thread_pools",
    "update",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rehearsal' has no attribute {name!r}")
