"""One entry of an audit log: its fields, its canonical line (what is hashed and MAC'd) and the parse of a
line back into an entry, which accepts only the canonical form (see ``rehearsal.governance.audit_log``)."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rehearsal.errors import IntegrityError

__all__ = ["AuditEntry", "canonical_json", "entry_mac", "parse_entry"]

_FIELDS = frozenset({"seq", "time", "kind", "actor", "details", "prev", "key", "mac"})


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    time: float
    kind: str
    actor: str | None
    details: dict[str, Any]
    prev: str
    key: str
    mac: str

    @property
    def digest(self) -> str:
        """SHA-256 of the entry's line: what the next entry's ``prev`` holds."""
        return hashlib.sha256(canonical_json(self._fields(with_mac=True))).hexdigest()

    def _fields(self, *, with_mac: bool) -> dict[str, Any]:
        out = {
            "seq": self.seq,
            "time": self.time,
            "kind": self.kind,
            "actor": self.actor,
            "details": self.details,
            "prev": self.prev,
            "key": self.key,
        }
        if with_mac:
            out["mac"] = self.mac
        return out

    def line(self) -> bytes:
        return canonical_json(self._fields(with_mac=True)) + b"\n"


def canonical_json(value: Any) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode()


def entry_mac(key: bytes, payload: Mapping[str, Any]) -> str:
    return hmac.new(key, canonical_json(payload), hashlib.sha256).hexdigest()


def parse_entry(raw: bytes, number: int) -> AuditEntry:
    try:
        obj = json.loads(raw)
    except ValueError:
        raise IntegrityError(f"audit log line {number} is not valid JSON") from None
    if not isinstance(obj, dict) or set(obj) != _FIELDS:
        raise IntegrityError(f"audit log line {number} does not have the fields of an audit entry")
    try:
        entry = AuditEntry(
            seq=obj["seq"],
            time=obj["time"],
            kind=obj["kind"],
            actor=obj["actor"],
            details=obj["details"],
            prev=obj["prev"],
            key=obj["key"],
            mac=obj["mac"],
        )
        canonical = entry.line()[:-1]
    except (TypeError, ValueError):
        raise IntegrityError(f"audit log line {number} holds values of the wrong type") from None
    if (
        not isinstance(entry.seq, int)
        or not isinstance(entry.mac, str)
        or not isinstance(entry.details, dict)
    ):
        raise IntegrityError(f"audit log line {number} holds values of the wrong type")
    # Only the canonical form is accepted, so whitespace or key-order edits are caught too.
    if canonical != raw:
        raise IntegrityError(
            f"audit entry at line {number} (seq {entry.seq}) is not in canonical form (edited)"
        )
    return entry
