"""Master keys (KEK), envelope wrapping of data keys (DEK), and the AEAD record format.

Key hierarchy::

    KEK (32 bytes: env var, key file, KMS provider, or generated; never written to disk by this library)
     ├── wrapping key   = HKDF(KEK, info="rehearsal/wrap/v1")     wraps every tenant DEK (AES-256-GCM)
     ├── fingerprint    = HKDF(KEK, info="rehearsal/fingerprint/v1")[:8]   identifies the KEK, safe to store
     └── derive_key(p)  = HKDF(KEK, info="rehearsal/derive/v1/" + p)       e.g. the audit-log HMAC key

Sub-keys come from HKDF with distinct labels, so the wrapping key, the fingerprint and derived keys never
collide. A record sealed under a DEK is ``nonce (12) || ciphertext || tag (16)`` with associated data from
:func:`record_aad`, which binds store id, record id, tenant, key version and purpose.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import stat
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from rehearsal._files import create_new
from rehearsal.errors import MissingKeyError, ValidationError, WrongKeyError

__all__ = [
    "KEY_BYTES",
    "NONCE_BYTES",
    "RESERVED_TENANTS",
    "SYSTEM_TENANT",
    "TAG_BYTES",
    "TENANT_PATTERN",
    "KeyRing",
    "hkdf_sub_key",
    "keyed_tag",
    "new_data_key",
    "record_aad",
    "same_tag",
    "tenant_per_id",
    "validate_tenant",
]

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
TENANT_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# Internal owner of store-wide data (e.g. the encrypted index snapshot). It cannot collide with a user
# tenant because user names may not start with "_".
SYSTEM_TENANT = "_system"
RESERVED_TENANTS = frozenset({SYSTEM_TENANT})

_WRAP_FORMAT = 1
_AAD_LABEL = b"rehearsal/record/v1\x00"


def validate_tenant(name: object) -> str:
    """Return ``name`` if it is a valid user tenant name, else raise :class:`ValidationError`."""
    if not isinstance(name, str):
        raise ValidationError(f"tenant must be a str, got {type(name).__name__}")
    # fullmatch: "$" alone would accept a trailing newline.
    if TENANT_PATTERN.fullmatch(name) is None:
        raise ValidationError(
            f"invalid tenant name {name[:80]!r}: expected 1-64 characters of letters, digits, '.', '_', '-', "
            "starting with a letter or digit"
        )
    return name


def tenant_per_id(tenant: object, n: int) -> list[str]:
    """One valid tenant name per record: ``tenant`` is one name for all ``n``, or a sequence of ``n``."""
    if isinstance(tenant, str):
        return [validate_tenant(tenant)] * n
    if isinstance(tenant, Sequence) and len(tenant) == n:
        return [validate_tenant(t) for t in tenant]
    raise ValidationError("tenant must be a str or a sequence of str as long as ids")


def record_aad(store_id: bytes, record_id: int, tenant: str, key_version: int, purpose: str) -> bytes:
    """Associated data for one sealed item; every field is fixed-width or length-prefixed (unambiguous)."""
    return record_aad_prefix(store_id, tenant, key_version, purpose) + record_id.to_bytes(8, "big")


def record_aad_prefix(store_id: bytes, tenant: str, key_version: int, purpose: str) -> bytes:
    """The part of :func:`record_aad` shared by a batch; append the 8-byte big-endian record id."""
    t, p = tenant.encode(), purpose.encode()
    return b"".join(
        (_AAD_LABEL, store_id, key_version.to_bytes(4, "big"), bytes([len(t)]), t, bytes([len(p)]), p)
    )


def keyed_tag(keys: KeyRing, purpose: str, body: Any) -> str:
    """The HMAC-SHA256 (hex) of ``body`` as canonical JSON (sorted keys, no spaces) under the key derived
    for ``purpose``: the tag a plain file rehearsal reads back carries (check it with :func:`same_tag`)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(keys.derive_key(purpose), canonical, hashlib.sha256).hexdigest()


def same_tag(given: object, expected: str) -> bool:
    """Whether ``given`` (a tag read from a file: any JSON value) is ``expected``, compared in constant
    time; False for a non-string, and for text that is not ASCII (which ``hmac.compare_digest`` would
    raise on rather than refuse)."""
    if not isinstance(given, str):
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8"))


def new_data_key() -> bytes:
    """A fresh random 256-bit data key."""
    return os.urandom(KEY_BYTES)


def _hkdf(kek: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(kek)


def hkdf_sub_key(secret: bytes, info: bytes) -> bytes:
    """A 32-byte HKDF-SHA256 sub-key of ``secret`` (a random 256-bit key) for the label ``info``."""
    return _hkdf(secret, info, KEY_BYTES)


class KeyRing:
    """A 256-bit master key (KEK) and the operations built on it; the key bytes never leave except through
    :meth:`export_base64` (explicit) and pickling.

    Pickling carries the raw key so that DataLoader workers started with ``spawn`` can use it; the bytes then
    travel through process memory and pipes only. Do not persist a pickled KeyRing.
    """

    __slots__ = ("_fingerprint", "_kek", "_wrapper")

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes | bytearray):
            raise ValidationError(f"master key must be bytes, got {type(key).__name__}")
        if len(key) != KEY_BYTES:
            raise ValidationError(f"master key must be exactly {KEY_BYTES} bytes, got {len(key)}")
        self._kek = bytes(key)
        self._wrapper = AESGCM(_hkdf(self._kek, b"rehearsal/wrap/v1", KEY_BYTES))
        self._fingerprint = _hkdf(self._kek, b"rehearsal/fingerprint/v1", 8).hex()

    # -- constructors -------------------------------------------------------------------------------------

    @classmethod
    def generate(cls) -> KeyRing:
        """A new random master key; keep it with :meth:`export_base64` or lose every store it protects."""
        return cls(os.urandom(KEY_BYTES))

    @classmethod
    def from_bytes(cls, key: bytes) -> KeyRing:
        """From exactly 32 raw bytes."""
        return cls(key)

    @classmethod
    def from_base64(cls, text: str) -> KeyRing:
        """From standard base64 of 32 bytes (surrounding whitespace ignored)."""
        if not isinstance(text, str):
            raise ValidationError(f"base64 master key must be a str, got {type(text).__name__}")
        try:
            raw = base64.b64decode("".join(text.split()), validate=True)
        except (binascii.Error, ValueError):
            # The message never quotes the input: it is (almost) a key.
            raise ValidationError("master key is not valid base64") from None
        if len(raw) != KEY_BYTES:
            raise ValidationError(f"master key must decode to {KEY_BYTES} bytes, got {len(raw)}")
        return cls(raw)

    @classmethod
    def from_env(cls, var: str = "REHEARSAL_MASTER_KEY") -> KeyRing:
        """From base64 in environment variable ``var``; :class:`MissingKeyError` if it is unset or empty."""
        value = os.environ.get(var, "").strip()
        if not value:
            raise MissingKeyError(
                f"environment variable {var} is unset or empty; it must hold a base64 master key"
            )
        try:
            return cls.from_base64(value)
        except ValidationError as exc:
            raise ValidationError(f"environment variable {var}: {exc}") from None

    def to_file(self, path: str | os.PathLike[str]) -> None:
        """Write the key as base64 to a new file of mode 0600 (what :meth:`from_file` reads). An existing
        file is never overwritten: losing the old key would lose everything sealed with it."""
        shown = os.fspath(path)
        try:
            create_new(Path(shown), (self.export_base64() + "\n").encode("ascii"), mode=0o600)
        except FileExistsError:
            raise ValidationError(f"{shown!r} exists; a key file is never overwritten") from None
        except OSError as exc:
            raise ValidationError(f"cannot create {shown!r}: {exc.strerror}") from None

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> KeyRing:
        """From a file holding base64 text or 32 raw bytes, readable by its owner only (mode 0600 or 0400).

        The permission check is made on the opened descriptor, so a file swapped in meanwhile cannot pass.
        """
        shown = os.fspath(path)
        try:
            fd = os.open(shown, os.O_RDONLY)
        except FileNotFoundError:
            raise MissingKeyError(f"key file {shown!r} does not exist") from None
        except OSError as exc:
            raise MissingKeyError(f"key file {shown!r} cannot be opened: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as fh:
            mode = stat.S_IMODE(os.fstat(fh.fileno()).st_mode)
            if os.name == "posix" and mode & 0o077:
                raise ValidationError(
                    f"key file {shown!r} has mode {mode:04o}: it is readable or writable by group/others; "
                    f"run 'chmod 600 {shown}'"
                )
            data = fh.read(4096)
        # 32 raw bytes cannot be mistaken for base64 of a 32-byte key, which is 44 characters long.
        if len(data) == KEY_BYTES:
            return cls(data)
        try:
            return cls.from_base64(data.decode("ascii"))
        except (UnicodeDecodeError, ValidationError):
            raise ValidationError(
                f"key file {shown!r} holds neither {KEY_BYTES} raw bytes nor base64 of them"
            ) from None

    @classmethod
    def from_provider(cls, provider: Callable[[], bytes]) -> KeyRing:
        """From a callable (the hook for a KMS); it is called once, now."""
        if not callable(provider):
            raise ValidationError(f"key provider must be callable, got {type(provider).__name__}")
        try:
            key = provider()
        except Exception as exc:
            raise MissingKeyError(f"key provider {provider!r} failed: {type(exc).__name__}") from exc
        return cls(key)

    # -- use ----------------------------------------------------------------------------------------------

    @property
    def fingerprint(self) -> str:
        """16 hex characters derived one-way from the KEK: identifies the key, reveals nothing about it."""
        return self._fingerprint

    def wrap(self, key: bytes, *, context: bytes) -> bytes:
        """Encrypt ``key`` (a data key) under the KEK; ``context`` must be given again to unwrap."""
        nonce = os.urandom(NONCE_BYTES)
        return bytes([_WRAP_FORMAT]) + nonce + self._wrapper.encrypt(nonce, bytes(key), context)

    def unwrap(self, blob: bytes, *, context: bytes) -> bytes:
        """Inverse of :meth:`wrap`; :class:`WrongKeyError` unless this KEK and ``context`` wrapped it."""
        if len(blob) < 1 + NONCE_BYTES + TAG_BYTES or blob[0] != _WRAP_FORMAT:
            raise WrongKeyError(f"wrapped key is malformed (length {len(blob)})")
        try:
            return self._wrapper.decrypt(blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :], context)
        except InvalidTag:
            raise WrongKeyError(
                f"master key {self._fingerprint} cannot unwrap this data key (wrong key or altered data)"
            ) from None

    def derive_key(self, purpose: str, length: int = 32) -> bytes:
        """An HKDF sub-key for ``purpose`` (e.g. ``"audit-hmac"``); same inputs, same key."""
        if not isinstance(purpose, str) or not purpose:
            raise ValidationError(f"purpose must be a non-empty str, got {purpose!r}")
        if isinstance(length, bool) or not isinstance(length, int) or not 16 <= length <= 255 * 32:
            raise ValidationError(f"length must be an int in [16, 8160], got {length!r}")
        return _hkdf(self._kek, b"rehearsal/derive/v1/" + purpose.encode(), length)

    def export_base64(self) -> str:
        """The KEK as base64, for a 'keygen' command; the only way the key leaves this object on purpose."""
        return base64.b64encode(self._kek).decode("ascii")

    def __repr__(self) -> str:
        return f"KeyRing(fingerprint={self._fingerprint!r}, key=<redacted>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        # Equal fingerprints mean equal keys (up to a 64-bit HKDF collision) without comparing key bytes.
        return isinstance(other, KeyRing) and other._fingerprint == self._fingerprint

    def __hash__(self) -> int:
        return hash(self._fingerprint)

    def __getstate__(self) -> dict[str, Any]:
        return {"key": self._kek}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # AESGCM objects do not pickle; rebuild the derived state from the key.
        KeyRing.__init__(self, state["key"])
