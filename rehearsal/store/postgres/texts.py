"""The sealed texts of a server memory (see ``KeyedStore``): sealed on the client exactly as in the SQLite
vault, so the server holds only ciphertext and wrapped keys, never a text or a key.

Data keys, sealing and rotation are :class:`rehearsal.crypto.data_keys.DataKeys`'s, kept in the server's
tables by :class:`~rehearsal.store.postgres.key_table.ServerKeyTable`; record ids, tenants and purposes are
bound into each ciphertext's associated data as in SQLite, so a row moved to another id or tenant fails to
open.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag

from rehearsal.crypto.data_keys import (
    TEXT_PURPOSE,
    DataKeys,
    check_internal_tenant,
    check_master_key,
    check_purpose,
    master_key_meta,
)
from rehearsal.crypto.keys import RESERVED_TENANTS, SYSTEM_TENANT, KeyRing, tenant_per_id, validate_tenant
from rehearsal.errors import IntegrityError, NotFoundError, ReadOnlyError, StoreFormatError, ValidationError
from rehearsal.store.payloads import check_payloads
from rehearsal.store.postgres.connection import ServerConnection, mapped
from rehearsal.store.postgres.key_table import ServerKeyTable, meta_value

__all__ = ["ServerVault"]

log = logging.getLogger("rehearsal.vault")
_SHOW = 5  # ids quoted in an error message
_MAX_ID = 2**63 - 1


def _ids(ids: Sequence[int], *, unique: bool) -> list[int]:
    if isinstance(ids, str | bytes) or not hasattr(ids, "__len__"):
        raise ValidationError(f"record ids must be a sequence of ints, got {type(ids).__name__}")
    out = [int(i) for i in ids]
    if any(not 0 <= i <= _MAX_ID for i in out):
        raise ValidationError(f"record ids must be in [0, 2**63-1], got {min(out)}")
    if unique and len(set(out)) != len(out):
        raise ValidationError("duplicate record ids in one call")
    return out


class ServerVault:
    """Texts sealed per tenant, data keys wrapped by the master key, on the memory's server connection."""

    def __init__(
        self, conn: ServerConnection, keys: KeyRing, *, max_encryptions_per_key: int = 2**30
    ) -> None:
        """Use :meth:`create` or :meth:`attach`."""
        if not isinstance(keys, KeyRing):
            raise ValidationError(f"keys must be a KeyRing, got {type(keys).__name__}")
        self.conn = conn
        table = ServerKeyTable(conn)
        meta = table.vault_meta()
        if not isinstance(meta.get("store_id"), bytes) or not isinstance(meta.get("kek_check"), bytes):
            raise StoreFormatError(f"{conn.location.display()} has a damaged vault_meta table")
        self._store_id: bytes = meta["store_id"]
        fingerprint = meta.get("kek_fingerprint")
        meta["kek_fingerprint"] = fingerprint.decode() if isinstance(fingerprint, bytes) else fingerprint
        check_master_key(keys, self._store_id, meta)
        self._data_keys = DataKeys(
            table, keys, store_id=self._store_id, max_encryptions_per_key=max_encryptions_per_key
        )

    @classmethod
    @mapped("creating the vault")
    def create(cls, conn: ServerConnection, keys: KeyRing) -> ServerVault:
        """The vault's identity and master-key check, in the tables ``create_schema`` made (inside the
        caller's transaction)."""
        store_id = os.urandom(16)
        rows = [("store_id", store_id), *((k, meta_value(v)) for k, v in master_key_meta(keys, store_id))]
        with conn.raw.cursor() as cursor:
            cursor.executemany("INSERT INTO vault_meta (name, value) VALUES (%s, %s)", rows)
        return cls(conn, keys)

    @classmethod
    @mapped("opening the vault")
    def attach(cls, conn: ServerConnection, keys: KeyRing) -> ServerVault:
        return cls(conn, keys)

    @property
    def store_id(self) -> bytes:
        return self._store_id

    def _writable(self) -> None:
        if self.conn.read_only:
            raise ReadOnlyError("this vault was opened read-only")

    # -- texts -----------------------------------------------------------------------------------
    @mapped("storing texts")
    def put(self, ids: Sequence[int], texts: Sequence[str], *, tenant: str | Sequence[str]) -> None:
        self._writable()
        id_list = _ids(ids, unique=True)
        owners = tenant_per_id(tenant, len(id_list))
        if isinstance(texts, str) or len(texts) != len(id_list):
            raise ValidationError(f"got {len(id_list)} ids but {len(texts)} texts")
        datas = []
        for pos, text in enumerate(texts):
            if not isinstance(text, str):
                raise ValidationError(f"texts[{pos}] must be a str, got {type(text).__name__}")
            datas.append(text.encode("utf-8"))
        if not id_list:
            return
        with self.conn.write():
            taken = self.conn.execute(
                "SELECT id FROM vault_records WHERE id = ANY(%s) ORDER BY id", (id_list,)
            ).fetchall()
            if taken:
                raise ValidationError(f"record ids already exist: {[r[0] for r in taken][:_SHOW]}")
            # Each tenant's texts are sealed under its own key; the rows then go in with one COPY.
            groups: dict[str, list[int]] = {}
            for pos, owner in enumerate(owners):
                groups.setdefault(owner, []).append(pos)
            sealed_at: dict[int, tuple[int, int, bytes]] = {}
            for owner, positions in groups.items():
                part = self._data_keys.seal_batch(
                    owner, [id_list[p] for p in positions], [datas[p] for p in positions], TEXT_PURPOSE
                )
                sealed_at.update(zip(positions, part, strict=True))
            sealed = [sealed_at[p] for p in range(len(id_list))]
            with (
                self.conn.raw.cursor() as cursor,
                cursor.copy(
                    "COPY vault_records (id, key_id, sealed) FROM STDIN WITH (FORMAT BINARY)"
                ) as copy,
            ):
                copy.set_types(["int8", "int8", "bytea"])
                for rid, (key_id, _, blob) in zip(id_list, sealed, strict=True):
                    copy.write_row((rid, key_id, blob))

    def _fetch(self, id_list: list[int]) -> dict[int, str]:
        out: dict[int, str] = {}
        keys = self._data_keys
        with self.conn.snapshot():
            rows = self.conn.execute(
                "SELECT id, key_id, sealed FROM vault_records WHERE id = ANY(%s)", (sorted(set(id_list)),)
            ).fetchall()
            for rid, key_id, sealed in rows:
                entry = keys.cache.get(key_id) or keys.load(key_id, rid)
                try:
                    plain = entry[0].decrypt(sealed[:12], sealed[12:], entry[3] + rid.to_bytes(8, "big"))
                    out[rid] = plain.decode()
                except (InvalidTag, ValueError):
                    raise IntegrityError(
                        f"record {rid} failed authentication: its stored bytes were altered"
                        " or moved from another record or tenant"
                    ) from None
        return out

    @mapped("reading texts")
    def get(self, ids: Sequence[int]) -> list[str]:
        id_list = _ids(ids, unique=False)
        found = self._fetch(id_list)
        missing = sorted({i for i in id_list if i not in found})
        if missing:
            raise NotFoundError(f"{len(missing)} record ids not in the vault: {missing[:_SHOW]}")
        return [found[i] for i in id_list]

    @mapped("reading texts")
    def get_present(self, ids: Sequence[int]) -> dict[int, str]:
        return self._fetch(_ids(ids, unique=False))

    @mapped("deleting texts")
    def delete(self, ids: Sequence[int]) -> int:
        self._writable()
        id_list = _ids(ids, unique=True)
        with self.conn.write():
            gone = self.conn.execute(
                "DELETE FROM vault_records WHERE id = ANY(%s) RETURNING id", (id_list,)
            ).fetchall()
            if len(gone) != len(id_list):
                missing = sorted(set(id_list) - {r[0] for r in gone})
                # Raising rolls the deletion back with the transaction (or its savepoint).
                raise NotFoundError(f"{len(missing)} record ids not in the vault: {missing[:_SHOW]}")
        return len(id_list)

    @mapped("shredding a tenant")
    def shred(self, tenant: str) -> int:
        self._writable()
        if isinstance(tenant, str) and tenant in RESERVED_TENANTS:
            raise ValidationError(
                f"tenant {tenant!r} is reserved for the store itself and cannot be shredded"
            )
        validate_tenant(tenant)
        with self.conn.write():
            tenant_id = self._data_keys.tenant_id(tenant)
            if tenant_id is None:
                raise NotFoundError(f"tenant {tenant!r} has no data in the vault")
            removed = self.conn.execute(
                "DELETE FROM vault_records WHERE key_id IN (SELECT id FROM vault_keys WHERE tenant_id = %s)",
                (tenant_id,),
            ).rowcount
            destroyed = self._data_keys.destroy_tenant(tenant_id)
        log.info("shredded tenant %r: %d records, %d data keys destroyed", tenant, removed, destroyed)
        return int(removed)

    @mapped("rotating the master key")
    def rotate_master_key(self, new_keys: KeyRing) -> None:
        self._writable()
        if not isinstance(new_keys, KeyRing):
            raise ValidationError(f"new_keys must be a KeyRing, got {type(new_keys).__name__}")
        with self.conn.write():
            self._data_keys.rewrap_all(new_keys)
        self._data_keys.keys = new_keys  # only once the new wrappings are committed

    # -- sealing other data ----------------------------------------------------------------------
    def seal(self, tenant: str, record_id: int, payload: bytes, *, purpose: str) -> bytes:
        return self.seal_many(tenant, [record_id], [payload], purpose=purpose)[0]

    @mapped("sealing")
    def seal_many(
        self, tenant: str, ids: Sequence[int], payloads: Sequence[bytes], *, purpose: str
    ) -> list[bytes]:
        self._writable()
        tenant = check_internal_tenant(tenant)
        purpose = check_purpose(purpose)
        id_list = _ids(ids, unique=False)
        checked = check_payloads(payloads, len(id_list), name="payloads", ids_name="ids")
        if not id_list:
            return []
        with self.conn.write():
            return self._data_keys.seal_blobs(tenant, id_list, checked, purpose)

    def open_sealed(self, tenant: str, record_id: int, blob: bytes | memoryview, *, purpose: str) -> bytes:
        return self.open_sealed_many(tenant, [record_id], [bytes(blob)], purpose=purpose)[0]

    @mapped("opening sealed data")
    def open_sealed_many(
        self, tenant: str, ids: Sequence[int], blobs: Sequence[bytes], *, purpose: str
    ) -> list[bytes]:
        tenant = check_internal_tenant(tenant)
        purpose = check_purpose(purpose)
        id_list = _ids(ids, unique=False)
        if isinstance(blobs, bytes | str) or len(blobs) != len(id_list):
            raise ValidationError("blobs must be a sequence of bytes as long as ids")
        with self.conn.snapshot():
            return self._data_keys.open_blobs(tenant, id_list, blobs, purpose)

    @mapped("deriving the catalog key")
    def derive_key(self, label: str) -> bytes:
        """A 32-byte key for ``label`` (the catalog's row and commit tags), stable across master-key
        rotations; see :meth:`rehearsal.crypto.data_keys.DataKeys.derived_secret`. A new vault makes its
        internal data key here, in the creating transaction."""
        if self._data_keys.tenant_id(SYSTEM_TENANT) is not None or self.conn.read_only:
            return self._data_keys.derived_secret(label)
        with self.conn.write():
            return self._data_keys.derived_secret(label)

    # -- inspection ------------------------------------------------------------------------------
    @mapped("reading the vault")
    def tenants(self) -> list[str]:
        names = [r[0] for r in self.conn.execute("SELECT name FROM vault_tenants ORDER BY name").fetchall()]
        return [n for n in names if n not in RESERVED_TENANTS]

    @mapped("reading the vault")
    def ids(self) -> list[int]:
        return [int(r[0]) for r in self.conn.execute("SELECT id FROM vault_records ORDER BY id").fetchall()]

    @mapped("verifying the vault")
    def verify(self) -> int:
        """Unwrap every data key and authenticate every record -> number of records."""
        count, last = 0, -1
        with self.conn.snapshot():
            self._data_keys.load_all()
            while True:
                batch = [
                    int(r[0])
                    for r in self.conn.execute(
                        "SELECT id FROM vault_records WHERE id > %s ORDER BY id LIMIT 10000", (last,)
                    ).fetchall()
                ]
                if not batch:
                    return count
                count += len(self._fetch(batch))
                last = batch[-1]

    def __repr__(self) -> str:
        where = self.conn.location.display()
        return f"ServerVault({where!r}, store_id={self._store_id.hex()!r}, keys=<redacted>)"
