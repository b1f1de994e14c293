"""What every verb that changes a deployment answers with, and the key it opens a deployment under."""

from __future__ import annotations

import dataclasses
from typing import Any

from rehearsal.crypto.keys import KeyRing
from rehearsal.crypto.master_key import resolve_master_key
from rehearsal.errors import MissingKeyError

__all__ = ["UpdateResult", "deployment_keys"]


@dataclasses.dataclass
class UpdateResult:
    update: str
    decision: str  # "pass" (a new current version) or "staged" (waiting for promote)
    version: int | None
    expert: str | None
    novelty: dict[str, Any] | None
    metrics: dict[str, Any]
    # A staged candidate: what the gate would decide now, before the shadow ({"decision", "codes"}).
    gate_preview: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def deployment_keys(keys: KeyRing | None, key_file: str | None = None) -> KeyRing:
    """``keys``, or the master key from the environment or ``key_file``: a deployment's memory is always
    encrypted, so there is no opening one without."""
    found = keys if keys is not None else resolve_master_key(key_file)
    if found is None:
        raise MissingKeyError("a deployment's memory is encrypted: give its master key (env or --key-file)")
    return found
