"""rehearsal: retrieval-augmented rehearsal for continual fine-tuning of language models."""

from __future__ import annotations

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

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DimensionMismatchError",
    "EncoderMismatchError",
    "IntegrityError",
    "KeyManagementError",
    "MissingKeyError",
    "NotFoundError",
    "ReadOnlyError",
    "RehearsalError",
    "StoreFormatError",
    "StoreLockedError",
    "ValidationError",
    "WrongKeyError",
    "__version__",
]
