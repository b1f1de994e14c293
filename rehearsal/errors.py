"""The exception tree of rehearsal.

Every error the library raises on purpose derives from :class:`RehearsalError`, so a caller can catch
the whole family in one clause and still tell the cases apart::

    RehearsalError
    ├── ConfigError                 a configuration value is out of range or of the wrong type
    ├── ValidationError             bad input to a call (wrong type, empty batch, NaN vector, bad tenant name)
    │   └── DimensionMismatchError  vectors whose width differs from the memory's
    ├── KeyManagementError          base of key handling errors
    │   ├── MissingKeyError         no master key where one was required (env var unset, file absent)
    │   └── WrongKeyError           a master key that does not open this store
    ├── IntegrityError              stored bytes fail authentication or a structural check (names the record)
    ├── NotFoundError               an id, tenant or store that does not exist
    ├── StoreFormatError            a folder that is not a memory, or one written by a newer format version
    ├── ReadOnlyError               a mutation attempted on a memory opened read-only
    ├── StoreLockedError            a second writer tried to open a memory another process is writing
    ├── StorageError                the disk or the database refused an operation (disk full, I/O error)
    │   └── CleanupError            the operation committed, a cleanup after it failed (reported, not undone)
    ├── EncoderMismatchError        a memory asked to accept vectors from a different encoder
    └── UpdateBlockedError          a training update the validation gate failed or that awaits approval

Messages say what was wrong and with which value, and never contain key material or record text.
"""

from __future__ import annotations

__all__ = [
    "CleanupError",
    "ConfigError",
    "DimensionMismatchError",
    "EncoderMismatchError",
    "IntegrityError",
    "KeyManagementError",
    "MissingKeyError",
    "NotFoundError",
    "ReadOnlyError",
    "RehearsalError",
    "StorageError",
    "StoreFormatError",
    "StoreLockedError",
    "UpdateBlockedError",
    "ValidationError",
    "WrongKeyError",
]


class RehearsalError(Exception):
    """Base of every error raised on purpose by rehearsal."""


class ConfigError(RehearsalError, ValueError):
    """A configuration value is invalid; the message names the field and the value."""


class ValidationError(RehearsalError, ValueError):
    """An argument to a call is invalid; nothing was changed."""


class DimensionMismatchError(ValidationError):
    """Vectors have a different width from the memory or index they are used with."""


class KeyManagementError(RehearsalError):
    """Base of errors about master keys and data keys."""


class MissingKeyError(KeyManagementError):
    """A master key was required but none was supplied or found."""


class WrongKeyError(KeyManagementError):
    """The supplied master key does not open this store."""


class IntegrityError(RehearsalError):
    """Stored data failed authentication or a consistency check."""


class NotFoundError(RehearsalError, LookupError):
    """A record, tenant or store does not exist."""


class StoreFormatError(RehearsalError):
    """A folder is not a rehearsal store, or was written by an unsupported format version."""


class ReadOnlyError(RehearsalError):
    """A mutation was attempted on a store opened read-only."""


class EncoderMismatchError(RehearsalError):
    """Vectors or texts are offered from an encoder other than the one that built the memory."""


class StoreLockedError(RehearsalError):
    """Another process holds the memory open for writing; open it read-only or close the other writer."""


class StorageError(RehearsalError, OSError):
    """The disk or the database refused a read or write (disk full, I/O error, a database that stays
    locked); the message names the file. What was acknowledged before stays durable."""


class CleanupError(StorageError):
    """The operation committed (it happened, and stays), but a cleanup after it failed: the WAL checkpoint
    after a key rotation on a full disk, say. The message begins with what was done ("rotated; cleanup
    failed") and says what is left over until the next successful cleanup."""


class UpdateBlockedError(RehearsalError):
    """A run's update was not promoted: ``decision`` is "fail" or "needs-approval", ``reasons`` say why."""

    def __init__(
        self,
        message: str,
        *,
        decision: str,
        reasons: list[str],
        update: str | None = None,
        codes: list[str] | None = None,
    ) -> None:
        super().__init__(message)
        self.decision = decision
        self.reasons = list(reasons)
        self.update = update  # the update's id, which ``rehearsal approve`` takes
        self.codes = list(codes or [])  # the reasons as the audit log has them: "regression:<task>", ...

    @property
    def unproven_only(self) -> bool:
        """Whether the update waits for a person only because its numbers are too few to show that it is
        within the gate's margin (every code a ``staging-unproven``, ``shadow-unproven`` or
        ``canary-unproven`` one), not for a regression, PII or a new task left unlearned."""
        kinds = {code.split(":", 1)[0] for code in self.codes}
        unproven = bool(kinds) and all(kind.endswith("-unproven") for kind in kinds)
        return self.decision == "needs-approval" and unproven
