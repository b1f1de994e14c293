"""A tamper-evident, append-only audit log of memory mutations and training updates.

One JSON object per line, in canonical form (sorted keys, no spaces, ASCII)::

    {"actor":..., "details":{...}, "key":"<fingerprint>", "kind":"ingest", "mac":"<hex>", "prev":"<hex>",
     "seq":0, "time":1700000000.0}

- ``prev`` is the SHA-256 of the previous line (64 zeros for seq 0), so the lines form a hash chain;
- ``mac`` is HMAC-SHA256 over the canonical JSON of every other field, keyed with
  ``keys.derive_key("audit-log")``; ``key`` is the fingerprint of the master key that derived it;
- ``details`` hold ids, counts, hashes, tags and metrics only: :func:`check_details` refuses strings that
  look like free text, so a record's text cannot slip in by mistake.

The head sidecar ``<log>.head`` holds the last acknowledged entry's seq and hash under the same HMAC key,
rewritten atomically after each append. A truncated tail is detected because the file then ends before
the head's seq. What stays undetectable: truncating the log *and* restoring an older head file saved
earlier (a rollback of both together), and anything done by someone who holds the master key.

Key rotation (:meth:`AuditLog.rotate`) appends a ``rotate-key`` entry naming the new fingerprint under the
old key, then continues under the new one. Verifying with the new key checks the new entries' MACs; the
older ones are authenticated through the hash chain, anchored by later MACs and the head.

Entries are written with ``O_APPEND`` under an exclusive ``flock`` and fsynced before ``append`` returns.
A crash mid-write leaves an incomplete last line after the head's seq; the next ``append`` removes it.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rehearsal._files import atomic_write, create_private
from rehearsal.errors import (
    ConfigError,
    IntegrityError,
    NotFoundError,
    RehearsalError,
    ValidationError,
    WrongKeyError,
)
from rehearsal.governance.audit_entry import AuditEntry, canonical_json, entry_mac, parse_entry
from rehearsal.governance.audit_key import AUDIT_KEY_PURPOSE, AuditKey
from rehearsal.store.failures import storage_errors

if TYPE_CHECKING:
    from rehearsal.crypto.keys import KeyRing

__all__ = [
    "AUDIT_KINDS",
    "DEFAULT_LOG_NAME",
    "AuditEntry",
    "AuditLog",
    "canonical_json",
    "check_details",
    "default_log_path",
    "ids_digest",
    "safe_token",
]

# "baseline": the state of a memory a log first sees; "reconcile": mutations that committed without their
# entry (a crash between commit and append), found by generation when the memory is next opened audited;
# "withdraw": a version a run recorded but never acknowledged (it crashed before saving its state);
# "novelty": a deployment update's novelty score and the expert decision it led to; "shadow": a staged
# candidate's shadow or canary comparison against the deployed version.
AUDIT_KINDS = (
    "ingest",
    "delete",
    "forget",
    "rotate-key",
    "expire",
    "train-update",
    "approve",
    "rollback",
    "baseline",
    "reconcile",
    "withdraw",
    "novelty",
    "shadow",
)
DEFAULT_LOG_NAME = "audit.log"
_ZERO = "0" * 64
_PSEUDONYM_PURPOSE = "audit-tenant-pseudonym"
# Identifiers, hashes, tags, ISO dates, emails of approvers: no whitespace, bounded length.
_SAFE_STRING = re.compile(r"[\w.:@/+=,#-]{0,128}")


def ids_digest(ids: list[int]) -> str:
    """A short, order-sensitive SHA-256 of a list of ids (what a training run used, say)."""
    return hashlib.sha256(",".join(str(int(i)) for i in ids).encode()).hexdigest()[:32]


def safe_token(value: str) -> str:
    """``value`` if the log takes it as it is (an identifier-like string), else ``sha256:`` and the first
    16 hex digits of its digest, so a name with spaces (a task called "customer support") can be logged."""
    if value and _SAFE_STRING.fullmatch(value) is not None:
        return value
    return "sha256:" + hashlib.sha256(value.encode("utf-8")).hexdigest()[:16]


def check_details(details: Mapping[str, Any], path: str = "details") -> dict[str, Any]:
    """Return ``details`` as a plain dict if it holds only numbers, booleans, None and identifier-like
    strings (nested in lists and dicts); ValidationError names the first value that looks like free text."""
    if not isinstance(details, Mapping):
        raise ValidationError(f"{path} must be a mapping, got {type(details).__name__}")
    return {str(k): _check_value(v, f"{path}[{k!r}]") for k, v in details.items()}


def _check_value(value: Any, path: str) -> Any:
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValidationError(f"{path} must be a finite number, got {value!r}")
        return value
    if isinstance(value, str):
        if _SAFE_STRING.fullmatch(value) is None:
            # The message does not quote the value: it may be the very text that must stay out of logs.
            raise ValidationError(
                f"{path} looks like free text ({len(value)} characters); the audit log takes ids, counts, "
                "hashes and tags only"
            )
        return value
    if isinstance(value, list | tuple):
        return [_check_value(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        return check_details(value, path)
    raise ValidationError(f"{path} has unsupported type {type(value).__name__}")


class AuditLog:
    """An append-only, hash-chained, HMAC'd log file. Use :meth:`open`."""

    def __init__(self, path: Path, keys: KeyRing | AuditKey) -> None:
        """``keys``: the master key, or an :class:`AuditKey` that verifies and reads but never writes."""
        self.path = path
        self.head_path = path.with_name(path.name + ".head")
        audit_key = keys if isinstance(keys, AuditKey) else AuditKey.of(keys)
        self._keys: KeyRing | None = None if isinstance(keys, AuditKey) else keys
        self._fingerprint, self._key = audit_key.fingerprint, audit_key.mac_key

    @classmethod
    def open(cls, path: str | os.PathLike[str], keys: KeyRing | AuditKey, *, create: bool = True) -> AuditLog:
        """The log at ``path`` (created empty if absent and ``create``, never with an AuditKey);
        WrongKeyError if another master key wrote it."""
        log = cls(Path(path), keys)
        if not log.path.exists() and not log.head_path.exists():
            if not create or log._keys is None:
                raise NotFoundError(f"no audit log at {str(log.path)!r}")
            log.path.parent.mkdir(parents=True, exist_ok=True)
            create_private(log.path)
            log._write_head(-1, _ZERO)
        else:
            log._read_head()
        return log

    def __repr__(self) -> str:
        return f"AuditLog(path={str(self.path)!r}, key={self._fingerprint}, hmac_key=<redacted>)"

    def _writer(self) -> KeyRing:
        if self._keys is None:
            raise ConfigError("this audit log was opened with a verification key: it verifies, never writes")
        return self._keys

    def pseudonym(self, name: str) -> str:
        """A keyed digest that stands for ``name`` (a tenant) in entries: the same name gives the same
        digest under this master key, and nobody without the key can tell which name it is or test a
        guess. A rotated master key gives new digests from then on."""
        key = self._writer().derive_key(_PSEUDONYM_PURPOSE)
        return "hmac:" + hmac.new(key, name.encode("utf-8"), hashlib.sha256).hexdigest()[:32]

    # -- writing ---------------------------------------------------------------------------------
    def append(self, kind: str, details: Mapping[str, Any], *, actor: str | None = None) -> AuditEntry:
        """Append one entry; it is on disk (fsynced) when this returns."""
        if kind not in AUDIT_KINDS:
            raise ValidationError(f"unknown audit kind {kind!r}; expected one of {list(AUDIT_KINDS)}")
        if actor is not None and (not isinstance(actor, str) or _SAFE_STRING.fullmatch(actor) is None):
            raise ValidationError("actor must be an identifier (no spaces, at most 128 characters)")
        clean = check_details(details)
        self._writer()
        with storage_errors(f"appending to audit log {self.path.name}"), self._locked():
            seq, prev = self._tail()
            entry = self._sign(seq + 1, kind, actor, clean, prev)
            self._write_line(entry)
            self._write_head(entry.seq, entry.digest)
        return entry

    def rotate(self, new_keys: KeyRing, *, actor: str | None = None) -> AuditEntry:
        """Record a master-key rotation under the old key, then continue the log under ``new_keys``.

        A rotation cut short after its entry and before its head (the head still under this key) is
        finished rather than recorded twice: a second rotation entry would name a key the log never had."""
        details = {"old_key": self._writer().fingerprint, "new_key": new_keys.fingerprint}
        with self._locked():
            seq, prev = self._tail()
            last = self._last_entry()
            if last is not None and last.kind == "rotate-key" and last.details == details:
                entry = last
            else:
                entry = self._sign(seq + 1, "rotate-key", actor, details, prev)
                self._write_line(entry)
            self._keys, self._key = new_keys, new_keys.derive_key(AUDIT_KEY_PURPOSE)
            self._fingerprint = new_keys.fingerprint
            self._write_head(entry.seq, entry.digest)
        return entry

    def _last_entry(self) -> AuditEntry | None:
        lines = self.path.read_bytes().splitlines()
        return parse_entry(lines[-1], len(lines)) if lines else None

    def _sign(self, seq: int, kind: str, actor: str | None, details: dict[str, Any], prev: str) -> AuditEntry:
        fields = {
            "seq": seq,
            "time": round(time.time(), 6),
            "kind": kind,
            "actor": actor,
            "details": details,
            "prev": prev,
            "key": self._fingerprint,
        }
        return AuditEntry(**fields, mac=entry_mac(self._key, fields))  # type: ignore[arg-type]

    def _write_line(self, entry: AuditEntry) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, entry.line())
            os.fsync(fd)
        finally:
            os.close(fd)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _tail(self) -> tuple[int, str]:
        """(seq, digest) of the last complete entry, after dropping an unacknowledged torn line; refuses
        to extend a log whose file ends before its head (truncated) or whose head it cannot trust."""
        head_seq, head_hash = self._read_head()
        data = self.path.read_bytes()
        complete = data[: data.rfind(b"\n") + 1]
        if len(complete) != len(data):
            # An incomplete line is a crash inside a previous append: it was never acknowledged.
            with open(self.path, "r+b") as fh:
                fh.truncate(len(complete))
                os.fsync(fh.fileno())
        lines = complete.splitlines()
        if not lines:
            if head_seq != -1:
                raise IntegrityError(
                    f"audit log {self.path.name} is empty but its head records seq {head_seq}"
                )
            return -1, _ZERO
        last = parse_entry(lines[-1], len(lines))
        if last.seq < head_seq:
            raise IntegrityError(
                f"audit log {self.path.name} ends at seq {last.seq} but its head records seq {head_seq}: "
                "entries were removed from the tail"
            )
        if last.seq == head_seq and last.digest != head_hash:
            raise IntegrityError(f"audit entry seq {last.seq} does not match the hash in the head file")
        return last.seq, last.digest

    # -- head sidecar ----------------------------------------------------------------------------
    def _write_head(self, seq: int, digest: str) -> None:
        fields = {"seq": seq, "hash": digest, "key": self._fingerprint}
        atomic_write(self.head_path, canonical_json({**fields, "mac": entry_mac(self._key, fields)}) + b"\n")

    def _read_head(self) -> tuple[int, str]:
        try:
            head = json.loads(self.head_path.read_bytes())
        except FileNotFoundError:
            raise IntegrityError(f"audit log head {self.head_path.name} is missing") from None
        except ValueError:
            raise IntegrityError(f"audit log head {self.head_path.name} is not valid JSON") from None
        if not isinstance(head, dict) or set(head) != {"seq", "hash", "key", "mac"}:
            raise IntegrityError(f"audit log head {self.head_path.name} has unexpected fields")
        fields = {k: head[k] for k in ("seq", "hash", "key")}
        if head["key"] != self._fingerprint:
            if self._head_key_damaged(str(head["key"])):
                raise IntegrityError(
                    f"audit log head {self.head_path.name} names master key {head['key']}, but the log's"
                    " last entry is authenticated under this key (the head was altered)"
                )
            raise WrongKeyError(
                f"audit log {self.path.name} was last written under master key {head['key']}, "
                f"not {self._fingerprint}"
            )
        if not hmac.compare_digest(str(head["mac"]), entry_mac(self._key, fields)):
            raise IntegrityError(f"audit log head {self.head_path.name} fails its MAC (altered)")
        return int(head["seq"]), str(head["hash"])

    def _head_key_damaged(self, head_key: str) -> bool:
        """Whether a head naming another master key was altered rather than written under that key: the
        log's last entry authenticates under this key and is not a rotation to ``head_key``."""
        try:
            last = self._last_entry()
        except (OSError, RehearsalError):
            return False
        if last is None or not hmac.compare_digest(
            last.mac, entry_mac(self._key, last._fields(with_mac=False))
        ):
            return False
        return not (last.kind == "rotate-key" and last.details.get("new_key") == head_key)

    # -- reading ---------------------------------------------------------------------------------
    def entries(self) -> list[AuditEntry]:
        """Every entry, verified first (IntegrityError names the first bad one)."""
        return self._verified()

    def verify(self) -> int:
        """Check the whole chain, every MAC under the current key, and the head; returns the entry count."""
        return len(self._verified())

    def _verified(self) -> list[AuditEntry]:
        head_seq, head_hash = self._read_head()
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            raise IntegrityError(
                f"audit log {self.path.name} is missing but its head records seq {head_seq}"
            ) from None
        if data and not data.endswith(b"\n"):
            count = data.count(b"\n") + 1
            raise IntegrityError(f"audit log line {count} is incomplete (a crash during append, or an edit)")
        entries: list[AuditEntry] = []
        prev, key = _ZERO, None
        pending_key: str | None = None
        for number, raw in enumerate(data.splitlines(), start=1):
            entry = parse_entry(raw, number)
            where = f"audit entry at line {number} (seq {entry.seq})"
            if entry.seq != number - 1:
                raise IntegrityError(
                    f"{where}: expected seq {number - 1}; an entry was deleted, inserted or reordered here"
                )
            if entry.prev != prev:
                raise IntegrityError(f"{where}: 'prev' does not match the entry before it (chain broken)")
            expected_key = pending_key or key
            if expected_key is not None and entry.key != expected_key:
                raise IntegrityError(f"{where}: key {entry.key} without a rotate-key entry naming it")
            if entry.key == self._fingerprint:
                mac = entry_mac(self._key, entry._fields(with_mac=False))
                if not hmac.compare_digest(entry.mac, mac):
                    raise IntegrityError(f"{where}: MAC does not match (edited or forged)")
            key = entry.key
            pending_key = str(entry.details.get("new_key")) if entry.kind == "rotate-key" else None
            prev = entry.digest
            entries.append(entry)
        last_seq = len(entries) - 1
        if last_seq < head_seq:
            raise IntegrityError(
                f"audit log ends at seq {last_seq} but its head records seq {head_seq}: "
                "entries were removed from the tail"
            )
        if head_seq >= 0 and entries[head_seq].digest != head_hash:
            raise IntegrityError(f"audit entry seq {head_seq} does not match the hash in the head file")
        # Entries past the head (a crash before the head was rewritten) are only trusted with our MAC.
        for entry in entries[head_seq + 1 :]:
            if entry.key != self._fingerprint:
                raise IntegrityError(f"audit entry seq {entry.seq} is past the head and not under this key")
        return entries


def default_log_path(memory_path: str | os.PathLike[str]) -> Path:
    """Where a memory's audit log lives unless told otherwise: ``<memory>/audit.log``."""
    return Path(memory_path) / DEFAULT_LOG_NAME
