"""The data keys of a vault: one AES-256-GCM key (DEK) per tenant and version, wrapped by the master key.

This module owns what the ``vault_tenants`` and ``vault_keys`` rows and the master-key check values in
``vault_meta`` mean: it makes, wraps, unwraps, caches, counts, rolls over and rewraps data keys, and seals
and opens items under them. It reads and writes those rows through a
:class:`~rehearsal.crypto.key_table.KeyTable` the vault hands it, and runs no SQL itself. Transactions, the
record table and the public methods belong to the vault (:class:`rehearsal.store.sqlite.texts.Vault`, or
the server's ``ServerVault``), which calls in here inside its transactions.

Sealed blob (from :meth:`DataKeys.seal_blobs`): format (1) || key version (4) || nonce (12) || ciphertext ||
tag (16), with associated data binding (store, record id, tenant, key version, purpose).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from rehearsal.crypto.key_table import KeyTable
from rehearsal.crypto.keys import (
    NONCE_BYTES,
    RESERVED_TENANTS,
    SYSTEM_TENANT,
    KeyRing,
    hkdf_sub_key,
    new_data_key,
    record_aad_prefix,
    validate_tenant,
)
from rehearsal.errors import IntegrityError, NotFoundError, ValidationError, WrongKeyError

__all__ = [
    "TEXT_PURPOSE",
    "DataKeys",
    "LoadedKey",
    "check_internal_tenant",
    "check_master_key",
    "check_purpose",
    "master_key_meta",
]

TEXT_PURPOSE = "text"  # the AAD purpose of vault records; reserved, so seal() cannot forge a record
_BLOB_FORMAT = 1
_KEK_CHECK_LABEL = b"rehearsal/kek-check/v1"

# Records keep the logger name the text store has always used, so a caller's logging configuration for
# "rehearsal.vault" still covers key rollover.
log = logging.getLogger("rehearsal.vault")

# (AESGCM, tenant, version, AAD prefix of text records); a plain tuple, indexed in the record read loop.
LoadedKey = tuple[AESGCM, str, int, bytes]


def _random_row_id() -> int:
    # Random rather than sequential ids for tenants and keys: an id from a rolled-back transaction is never
    # handed out again, so a DEK cached under it can never be confused with a different key.
    return int.from_bytes(os.urandom(8), "big") >> 1


def check_purpose(purpose: object) -> str:
    """``purpose`` if it may be passed to ``seal``/``open_sealed``, else :class:`ValidationError`."""
    if not isinstance(purpose, str) or not purpose or len(purpose.encode()) > 255:
        raise ValidationError(f"purpose must be a non-empty str of at most 255 bytes, got {purpose!r}")
    if purpose == TEXT_PURPOSE:
        raise ValidationError(f"purpose {TEXT_PURPOSE!r} is reserved for vault records")
    return purpose


def check_internal_tenant(tenant: object) -> str:
    """``tenant`` if it is a user tenant or a reserved one (such as ``"_system"``)."""
    if isinstance(tenant, str) and tenant in RESERVED_TENANTS:
        return tenant
    return validate_tenant(tenant)


def master_key_meta(keys: KeyRing, store_id: bytes) -> list[tuple[str, Any]]:
    """The ``vault_meta`` rows that record which master key the store is sealed with."""
    # The check value lets open() tell a wrong master key apart before touching any record.
    check = keys.wrap(store_id, context=_KEK_CHECK_LABEL + store_id)
    return [("kek_fingerprint", keys.fingerprint), ("kek_check", check)]


def check_master_key(keys: KeyRing, store_id: bytes, meta: dict[str, Any]) -> None:
    """:class:`WrongKeyError` unless ``keys`` is the master key recorded in ``meta`` (the vault_meta rows)."""
    try:
        ok = keys.unwrap(meta["kek_check"], context=_KEK_CHECK_LABEL + store_id)
    except WrongKeyError:
        ok = b""
    if ok != store_id:
        recorded = meta.get("kek_fingerprint")
        if isinstance(recorded, bytes | bytearray | memoryview):  # a server's bytea column
            recorded = bytes(recorded).decode("ascii", "replace")
        raise WrongKeyError(
            f"master key {keys.fingerprint} does not open this vault "
            f"(it was sealed with master key {recorded})"
        )


class DataKeys:
    """The tenants' data keys of one vault database, and a cache of the unwrapped ones.

    Methods that write must run inside the vault's write transaction; methods that read several rows
    inside its snapshot (``table`` runs on the vault's connection, so its calls join them). ``keys`` is the
    master key; the vault replaces it only after a rotation commits.
    """

    def __init__(
        self, table: KeyTable, keys: KeyRing, *, store_id: bytes, max_encryptions_per_key: int
    ) -> None:
        self.table = table
        self.keys = keys
        self.store_id = store_id
        self._limit = max_encryptions_per_key
        # key_id -> LoadedKey; DEKs are immutable once made. Read directly by the vault's record loop.
        self.cache: dict[int, LoadedKey] = {}

    def _context(self, tenant: str, version: int) -> bytes:
        return b"rehearsal/dek/v1" + self.store_id + version.to_bytes(4, "big") + tenant.encode()

    def load(self, key_id: int, record_id: int | None = None) -> LoadedKey:
        """Unwrap data key ``key_id`` into the cache; :class:`IntegrityError` (naming ``record_id`` when
        given) if it is missing or fails to unwrap, :class:`WrongKeyError` if the master key was rotated."""
        row = self.table.key(key_id)
        where = f" (record {record_id})" if record_id is not None else ""
        if row is None:
            raise IntegrityError(f"data key {key_id}{where} is missing from the vault")
        tenant, version, wrapped = row
        try:
            dek = self.keys.unwrap(wrapped, context=self._context(tenant, version))
        except WrongKeyError:
            # Re-check the master key: another process may have rotated it since this vault was opened.
            check_master_key(self.keys, self.store_id, self.table.vault_meta())
            raise IntegrityError(
                f"data key of tenant {tenant!r} version {version}{where} fails to unwrap"
            ) from None
        entry = (
            AESGCM(dek),
            tenant,
            version,
            record_aad_prefix(self.store_id, tenant, version, TEXT_PURPOSE),
        )
        self.cache[key_id] = entry
        return entry

    def load_all(self) -> None:
        """Unwrap every data key (for ``verify``)."""
        for key_id in self.table.key_ids():
            self.load(key_id)

    def _new_key(self, tenant_id: int, tenant: str, version: int) -> int:
        key_id = _random_row_id()
        wrapped = self.keys.wrap(new_data_key(), context=self._context(tenant, version))
        self.table.add_key(key_id, tenant_id, version, wrapped)
        if version > 1:
            log.info("tenant %r rolled to data key version %d", tenant, version)
        return key_id

    def tenant_id(self, tenant: str) -> int | None:
        """The row id of ``tenant``, or None if it holds no data key."""
        return self.table.tenant_id(tenant)

    def seal_batch(
        self, tenant: str, record_ids: Sequence[int], datas: Sequence[bytes], purpose: str
    ) -> list[tuple[int, int, bytes]]:
        """Seal under the tenant's current key, rolling to a new version at the limit.

        -> (key_id, version, nonce || ct || tag) per item. Runs inside a write transaction: the encryption
        counts are read and bumped there."""
        table = self.table
        # The tenant and its newest key in one call: a batch of many tenants makes it once each.
        current = table.newest_key(tenant)
        if current is None:
            tenant_id = table.tenant_id(tenant)
            if tenant_id is None:
                tenant_id = _random_row_id()
                table.add_tenant(tenant_id, tenant)
            key_id, version, used = self._new_key(tenant_id, tenant, 1), 1, 0
        else:
            tenant_id, key_id, version, used = current
        out: list[tuple[int, int, bytes]] = []
        pos = 0
        while pos < len(datas):
            if used >= self._limit:
                version += 1
                key_id, used = self._new_key(tenant_id, tenant, version), 0
            take = min(self._limit - used, len(datas) - pos)
            aead, _, _, text_prefix = self.cache.get(key_id) or self.load(key_id)
            prefix = (
                text_prefix
                if purpose == TEXT_PURPOSE
                else record_aad_prefix(self.store_id, tenant, version, purpose)
            )
            nonces = os.urandom(NONCE_BYTES * take)  # one syscall per batch, not per record
            encrypt = aead.encrypt
            for j in range(take):
                nonce = nonces[j * NONCE_BYTES : (j + 1) * NONCE_BYTES]
                rid = record_ids[pos + j]
                out.append(
                    (key_id, version, nonce + encrypt(nonce, datas[pos + j], prefix + rid.to_bytes(8, "big")))
                )
            table.count_encryptions(key_id, take)
            used += take
            pos += take
        return out

    def seal_blobs(
        self, tenant: str, record_ids: Sequence[int], datas: Sequence[bytes], purpose: str
    ) -> list[bytes]:
        """:meth:`seal_batch` as self-describing blobs (see the module docstring)."""
        sealed = self.seal_batch(tenant, record_ids, datas, purpose)
        head = bytes([_BLOB_FORMAT])
        return [head + version.to_bytes(4, "big") + blob for _, version, blob in sealed]

    def open_blobs(
        self, tenant: str, record_ids: Sequence[int], blobs: Sequence[bytes | memoryview], purpose: str
    ) -> list[bytes]:
        """Inverse of :meth:`seal_blobs`; :class:`IntegrityError` naming the record id if a blob was altered
        or belongs to another record, tenant or purpose. Runs inside a snapshot."""
        versions: dict[int, tuple[AESGCM, bytes]] = {}
        out: list[bytes] = []
        tenant_id = self.table.tenant_id(tenant)
        if tenant_id is None:
            if record_ids:
                raise NotFoundError(f"tenant {tenant!r} has no data key (never used, or shredded)")
            return out
        for rid, blob in zip(record_ids, blobs, strict=True):
            if (
                not isinstance(blob, bytes | memoryview)
                or len(blob) < 5 + NONCE_BYTES + 16
                or blob[0] != _BLOB_FORMAT
            ):
                raise IntegrityError(f"sealed {purpose} of record {rid} is malformed")
            version = int.from_bytes(blob[1:5], "big")
            if version not in versions:
                found = self.table.find_key(tenant_id, version)
                if found is None:
                    raise IntegrityError(
                        f"sealed {purpose} of record {rid} names unknown key version {version}"
                    )
                key_id = found[0]
                aead = (self.cache.get(key_id) or self.load(key_id, rid))[0]
                versions[version] = (aead, record_aad_prefix(self.store_id, tenant, version, purpose))
            aead, prefix = versions[version]
            view = memoryview(blob)  # slicing a view copies nothing: index snapshots run to gigabytes
            try:
                out.append(aead.decrypt(view[5:17], view[17:], prefix + rid.to_bytes(8, "big")))
            except InvalidTag:
                raise IntegrityError(f"sealed {purpose} of record {rid} failed authentication") from None
        return out

    def derived_secret(self, label: str) -> bytes:
        """A 32-byte key for ``label`` derived from the store's internal data key (version 1 of the
        reserved ``"_system"`` tenant, made here if the store has none yet).

        Derived from a data key rather than from the master key so that it survives a master-key rotation
        (which rewraps data keys without changing them): what it authenticates needs no rewrite then.
        Making the data key writes, so a store without one must be inside a write transaction."""
        tenant_id = self.table.tenant_id(SYSTEM_TENANT)
        if tenant_id is None:
            tenant_id = _random_row_id()
            self.table.add_tenant(tenant_id, SYSTEM_TENANT)
            self._new_key(tenant_id, SYSTEM_TENANT, 1)
        found = self.table.find_key(tenant_id, 1)
        if found is None:
            raise IntegrityError("the store's internal data key is missing from the vault")
        try:
            dek = self.keys.unwrap(found[1], context=self._context(SYSTEM_TENANT, 1))
        except WrongKeyError:
            raise IntegrityError("the store's internal data key fails to unwrap") from None
        return hkdf_sub_key(dek, b"rehearsal/derived/v2/" + self.store_id + label.encode())

    def destroy_tenant(self, tenant_id: int) -> int:
        """Delete the tenant's data keys and its row, and drop them from the cache -> number of keys.
        Its records must be deleted first (in the same transaction): they become unreadable."""
        key_ids = self.table.delete_tenant(tenant_id)
        for key_id in key_ids:
            self.cache.pop(key_id, None)
        return len(key_ids)

    def rewrap_all(self, new_keys: KeyRing) -> int:
        """Rewrap every data key, and the master-key check, under ``new_keys`` -> number of data keys.
        Runs inside a write transaction; ``self.keys`` stays the old key until the caller replaces it."""
        old = self.keys
        rows = self.table.all_keys()
        updates = []
        for key_id, tenant, version, wrapped in rows:
            context = self._context(tenant, version)
            updates.append((key_id, new_keys.wrap(old.unwrap(wrapped, context=context), context=context)))
        self.table.set_wrapped(updates)
        self.table.set_vault_meta(master_key_meta(new_keys, self.store_id))
        return len(rows)
