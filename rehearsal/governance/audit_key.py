"""A verification key for an audit log: what checks the log's MACs, without the master key.

The log's entries are authenticated with an HMAC key derived from the master key
(``derive_key("audit-log")``). That derived key, with the master key's fingerprint, is all that
``AuditLog.verify`` needs; it cannot decrypt a text, a vector or a data key, and it cannot be turned back
into the master key (HKDF is one-way). So an auditor can be handed it alone.

What it does not give: non-repudiation. The MAC is symmetric, so whoever holds this key could also write
entries that verify; the log refuses to append with it, but the key itself does not prevent a forger. Hand
it to an auditor you trust not to forge, or check the log against an anchor kept elsewhere.

The file is JSON, created owner-only and never overwritten::

    {"kind": "rehearsal-audit-verify-key", "version": 1, "fingerprint": "<16 hex>", "key": "<base64>"}
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rehearsal._files import create_new
from rehearsal.errors import ConfigError, ValidationError

if TYPE_CHECKING:
    from rehearsal.crypto.keys import KeyRing

__all__ = ["AUDIT_KEY_PURPOSE", "AuditKey"]

AUDIT_KEY_PURPOSE = "audit-log"
_KIND = "rehearsal-audit-verify-key"


@dataclass(frozen=True, repr=False)
class AuditKey:
    """The HMAC key of an audit log and the fingerprint of the master key it was derived from."""

    fingerprint: str
    mac_key: bytes

    @classmethod
    def of(cls, keys: KeyRing) -> AuditKey:
        return cls(keys.fingerprint, keys.derive_key(AUDIT_KEY_PURPOSE))

    def __repr__(self) -> str:
        return f"AuditKey(fingerprint={self.fingerprint}, mac_key=<redacted>)"

    def to_file(self, path: str | os.PathLike[str]) -> None:
        """Write the key to a new owner-only file (an existing file is never overwritten)."""
        body = {
            "kind": _KIND,
            "version": 1,
            "fingerprint": self.fingerprint,
            "key": base64.b64encode(self.mac_key).decode("ascii"),
        }
        try:
            create_new(Path(path), (json.dumps(body, sort_keys=True) + "\n").encode("ascii"))
        except FileExistsError:
            raise ValidationError(f"{str(path)!r} exists; a key file is never overwritten") from None

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> AuditKey:
        where = f"audit verification key {Path(path).name!r}"
        try:
            body = json.loads(Path(path).read_text(encoding="ascii"))
        except FileNotFoundError:
            raise ConfigError(f"{where}: no such file") from None
        except (OSError, ValueError):
            raise ConfigError(f"{where} is not a verification key file (JSON)") from None
        if not isinstance(body, dict) or body.get("kind") != _KIND or body.get("version") != 1:
            raise ConfigError(f"{where} is not a version-1 rehearsal audit verification key")
        fingerprint, key = body.get("fingerprint"), body.get("key")
        try:
            mac_key = base64.b64decode(str(key), validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(f"{where}: its key is not base64") from None
        if not isinstance(fingerprint, str) or len(mac_key) != 32:
            raise ConfigError(f"{where}: expected a fingerprint and a 32-byte key")
        return cls(fingerprint, mac_key)
