"""The encrypted text store: one SQLite database (WAL), one AES-256-GCM sealed row per record.

Layout (all tables prefixed ``vault_`` so a caller can keep its own tables in the same database)::

    vault_meta     name -> value: format_version, store_id, kek_fingerprint, kek_check
    vault_tenants  id, name                      one row per tenant that owns a data key
    vault_keys     id, tenant_id, version, wrapped DEK, encryptions made with it
    vault_records  id, key_id, sealed = nonce (12) || ciphertext || tag (16)

# INVARIANT: every vault_records.key_id names a vault_keys row; shred removes both in one transaction.

Data keys (making, wrapping, counting, rollover, sealing other data, master-key rotation) live in
:mod:`rehearsal.crypto.data_keys`; this module keeps the record table, transactions and argument checks.

Policies: the empty string is a valid text and is stored faithfully (it seals to a bare 16-byte tag);
``put``/``delete`` reject the whole batch on any bad item; an empty batch is a no-op. Each data key is used
for at most ``max_encryptions_per_key`` encryptions (counted in the database, so across processes), then a
new key version is made: random 96-bit nonces stay far below NIST SP 800-38D's 2**32 messages per key.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag

from rehearsal.crypto.data_keys import TEXT_PURPOSE, check_internal_tenant, check_purpose
from rehearsal.crypto.keys import RESERVED_TENANTS, SYSTEM_TENANT, KeyRing, tenant_per_id, validate_tenant
from rehearsal.errors import CleanupError, IntegrityError, NotFoundError, ValidationError
from rehearsal.store.payloads import check_payloads
from rehearsal.store.sqlite.vault_db import (
    CHUNK,
    FORMAT_VERSION,
    SHOW,
    VaultDatabase,
    check_ids,
    in_sql,
    log,
)

__all__ = ["FORMAT_VERSION", "TEXT_PURPOSE", "Vault"]


class Vault(VaultDatabase):
    """Encrypted text records keyed by non-negative int ids, each owned by a tenant with its own data key."""

    def put(self, ids: Sequence[int], texts: Sequence[str], *, tenant: str | Sequence[str]) -> None:
        """Store new records; ids must be unused non-negative ints. All or nothing."""
        self._writable()
        id_list = check_ids(ids, unique=True)
        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise ValidationError(f"texts must be a sequence of str, got {type(texts).__name__}")
        if len(texts) != len(id_list):
            raise ValidationError(f"got {len(id_list)} ids but {len(texts)} texts")
        owners = tenant_per_id(tenant, len(id_list))
        datas: list[bytes] = []
        for pos, text in enumerate(texts):
            if not isinstance(text, str):
                raise ValidationError(f"texts[{pos}] must be a str, got {type(text).__name__}")
            try:
                datas.append(text.encode("utf-8"))
            except UnicodeEncodeError:
                raise ValidationError(f"texts[{pos}] (record {id_list[pos]}) is not valid Unicode") from None
        if not id_list:
            return
        groups: dict[str, list[int]] = {}
        for pos, owner in enumerate(owners):
            groups.setdefault(owner, []).append(pos)
        with self.transaction():
            taken = self._existing(id_list)
            if taken:
                raise ValidationError(f"record ids already exist: {taken[:SHOW]}")
            rows: list[tuple[int, int, bytes]] = []
            for owner, positions in groups.items():
                gids = [id_list[p] for p in positions]
                sealed = self._data_keys.seal_batch(owner, gids, [datas[p] for p in positions], TEXT_PURPOSE)
                rows.extend((rid, key_id, blob) for rid, (key_id, _, blob) in zip(gids, sealed, strict=True))
            self.connection.executemany(
                "INSERT INTO vault_records (id, key_id, sealed) VALUES (?, ?, ?)", rows
            )

    def _existing(self, id_list: list[int]) -> list[int]:
        found: list[int] = []
        for start in range(0, len(id_list), CHUNK):
            chunk = id_list[start : start + CHUNK]
            sql = in_sql("SELECT id FROM vault_records WHERE id IN ({}) ORDER BY id", len(chunk))
            found.extend(r[0] for r in self.connection.execute(sql, chunk))
        return found

    def _fetch(self, id_list: list[int]) -> dict[int, str]:
        uniq = sorted(set(id_list))
        out: dict[int, str] = {}
        dek, load = self._data_keys.cache, self._data_keys.load
        with self._snapshot():
            for start in range(0, len(uniq), CHUNK):
                chunk = uniq[start : start + CHUNK]
                sql = in_sql("SELECT id, key_id, sealed FROM vault_records WHERE id IN ({})", len(chunk))
                for rid, key_id, sealed in self.connection.execute(sql, chunk).fetchall():
                    entry = dek.get(key_id) or load(key_id, rid)
                    try:
                        out[rid] = (
                            entry[0]
                            .decrypt(sealed[:12], sealed[12:], entry[3] + rid.to_bytes(8, "big"))
                            .decode()
                        )
                    except (InvalidTag, ValueError):
                        raise IntegrityError(
                            f"record {rid} failed authentication: its stored bytes were altered"
                            " or moved from another record or tenant"
                        ) from None
        return out

    def get(self, ids: Sequence[int]) -> list[str]:
        """The texts of ``ids``, in order; :class:`NotFoundError` naming the missing ids."""
        id_list = check_ids(ids, unique=False)
        found = self._fetch(id_list)
        if len(found) != len(set(id_list)):
            missing = sorted({i for i in id_list if i not in found})
            raise NotFoundError(f"{len(missing)} record ids not in the vault: {missing[:SHOW]}")
        return [found[i] for i in id_list]

    def get_present(self, ids: Sequence[int]) -> dict[int, str]:
        """The texts of those ``ids`` that exist (missing ids are skipped)."""
        return self._fetch(check_ids(ids, unique=False))

    def delete(self, ids: Sequence[int]) -> int:
        """Remove records; :class:`NotFoundError` (and nothing removed) if any id is unknown."""
        self._writable()
        id_list = check_ids(ids, unique=True)
        with self.transaction():
            present = set(self._existing(id_list))
            if len(present) != len(id_list):
                missing = sorted(set(id_list) - present)
                raise NotFoundError(f"{len(missing)} record ids not in the vault: {missing[:SHOW]}")
            for start in range(0, len(id_list), CHUNK):
                chunk = id_list[start : start + CHUNK]
                self.connection.execute(
                    in_sql("DELETE FROM vault_records WHERE id IN ({})", len(chunk)), chunk
                )
        return len(id_list)

    def shred(self, tenant: str) -> int:
        """Destroy the tenant's data keys and delete its records -> number of records removed. The WAL is
        checkpointed afterwards so neither the ciphertext nor the wrapped keys linger on disk."""
        self._writable()
        if isinstance(tenant, str) and tenant in RESERVED_TENANTS:
            raise ValidationError(
                f"tenant {tenant!r} is reserved for the store itself and cannot be shredded"
            )
        validate_tenant(tenant)
        with self.transaction():
            tenant_id = self._data_keys.tenant_id(tenant)
            if tenant_id is None:
                raise NotFoundError(f"tenant {tenant!r} has no data in the vault")
            removed = self.connection.execute(
                "DELETE FROM vault_records WHERE key_id IN (SELECT id FROM vault_keys WHERE tenant_id = ?)",
                (tenant_id,),
            ).rowcount
            destroyed = self._data_keys.destroy_tenant(tenant_id)
            self._checkpoint_pending = True
        log.info("shredded tenant %r: %d records, %d data keys destroyed", tenant, removed, destroyed)
        return int(removed)

    def rotate_master_key(self, new_keys: KeyRing) -> None:
        """Rewrap every data key under ``new_keys``; records are not re-encrypted. Afterwards only
        ``new_keys`` opens the vault (a copy of the database taken before rotation still opens with the
        old key)."""
        self._writable()
        if not isinstance(new_keys, KeyRing):
            raise ValidationError(f"new_keys must be a KeyRing, got {type(new_keys).__name__}")
        old = self._data_keys.keys
        outer = self.connection.in_transaction  # then the outer transaction's commit checkpoints
        with self.transaction():
            rewrapped = self._data_keys.rewrap_all(new_keys)
            self._checkpoint_pending = outer
        # The commit is the point of truth: from here only the new key opens the vault, whatever fails next.
        self._data_keys.keys = new_keys
        log.info(
            "master key rotated from %s to %s (%d data keys rewrapped)",
            old.fingerprint,
            new_keys.fingerprint,
            rewrapped,
        )
        if outer:
            return
        try:
            self.checkpoint()  # the old wrappings leave the WAL
        except (sqlite3.Error, OSError) as exc:
            self._checkpoint_pending = True  # the next commit tries again
            raise CleanupError(
                f"rotated; cleanup failed: the master key is now {new_keys.fingerprint} (only it opens the "
                f"vault), but the WAL checkpoint after the commit failed ({exc}); the old wrappings stay in "
                "the WAL until the next checkpoint"
            ) from exc

    # -- sealing other data under a tenant's key ----------------------------------------------------------

    def seal(self, tenant: str, record_id: int, data: bytes, *, purpose: str) -> bytes:
        """Encrypt ``data`` under the tenant's data key, bound to (store, id, tenant, version, purpose).

        The blob is self-describing: format (1) || key version (4) || nonce (12) || ciphertext || tag (16).
        The reserved tenant ``"_system"`` is accepted here for store-wide data."""
        return self.seal_many(tenant, [record_id], [data], purpose=purpose)[0]

    def seal_many(
        self, tenant: str, record_ids: Sequence[int], datas: Sequence[bytes], *, purpose: str
    ) -> list[bytes]:
        """:meth:`seal` for a batch; counts towards the per-key encryption limit like ``put``."""
        self._writable()
        tenant = check_internal_tenant(tenant)
        purpose = check_purpose(purpose)
        id_list = check_ids(record_ids, unique=False)
        payloads = check_payloads(datas, len(id_list), name="datas", ids_name="record_ids")
        if not id_list:
            return []
        with self.transaction():
            return self._data_keys.seal_blobs(tenant, id_list, payloads, purpose)

    def open_sealed(self, tenant: str, record_id: int, blob: bytes | memoryview, *, purpose: str) -> bytes:
        """Inverse of :meth:`seal`; :class:`IntegrityError` naming the record id if the blob was altered or
        belongs to another record, tenant or purpose."""
        return self.open_sealed_many(tenant, [record_id], [blob], purpose=purpose)[0]

    def open_sealed_many(
        self, tenant: str, record_ids: Sequence[int], blobs: Sequence[bytes | memoryview], *, purpose: str
    ) -> list[bytes]:
        """:meth:`open_sealed` for a batch."""
        tenant = check_internal_tenant(tenant)
        purpose = check_purpose(purpose)
        id_list = check_ids(record_ids, unique=False)
        if isinstance(blobs, bytes | str) or len(blobs) != len(id_list):
            raise ValidationError("blobs must be a sequence of bytes as long as record_ids")
        with self._snapshot():
            return self._data_keys.open_blobs(tenant, id_list, blobs, purpose)

    def derive_key(self, label: str) -> bytes:
        """A 32-byte key for ``label`` (e.g. the catalog's row MACs), stable across master-key rotations;
        see :meth:`rehearsal.crypto.data_keys.DataKeys.derived_secret`."""
        if self._data_keys.tenant_id(SYSTEM_TENANT) is not None or self._read_only:
            return self._data_keys.derived_secret(label)
        with self.transaction():
            return self._data_keys.derived_secret(label)

    # -- inspection ---------------------------------------------------------------------------------------

    def tenants(self) -> list[str]:
        """User tenants holding a data key, sorted (the reserved ``"_system"`` is not listed)."""
        names = [r[0] for r in self.connection.execute("SELECT name FROM vault_tenants ORDER BY name")]
        return [n for n in names if n not in RESERVED_TENANTS]

    def tenant_of(self, ids: Sequence[int]) -> dict[int, str]:
        """The owning tenant of each id; :class:`NotFoundError` naming missing ids."""
        id_list = check_ids(ids, unique=False)
        out: dict[int, str] = {}
        with self._snapshot():
            for start in range(0, len(id_list), CHUNK):
                chunk = id_list[start : start + CHUNK]
                sql = in_sql(
                    "SELECT r.id, t.name FROM vault_records r JOIN vault_keys k ON k.id = r.key_id"
                    " JOIN vault_tenants t ON t.id = k.tenant_id WHERE r.id IN ({})",
                    len(chunk),
                )
                out.update(self.connection.execute(sql, chunk).fetchall())
        missing = sorted(set(id_list) - out.keys())
        if missing:
            raise NotFoundError(f"{len(missing)} record ids not in the vault: {missing[:SHOW]}")
        return out

    def ids(self, *, tenant: str | None = None) -> list[int]:
        """All record ids, ascending; only the tenant's when ``tenant`` is given."""
        if tenant is None:
            return [r[0] for r in self.connection.execute("SELECT id FROM vault_records ORDER BY id")]
        sql = (
            "SELECT r.id FROM vault_records r JOIN vault_keys k ON k.id = r.key_id"
            " JOIN vault_tenants t ON t.id = k.tenant_id WHERE t.name = ? ORDER BY r.id"
        )
        return [r[0] for r in self.connection.execute(sql, (validate_tenant(tenant),))]

    def verify(self) -> int:
        """Unwrap every data key and authenticate every record -> number of records;
        :class:`IntegrityError` naming the first bad record (by id)."""
        count, last = 0, -1
        with self._snapshot():
            self._data_keys.load_all()
            while True:
                sql = "SELECT id FROM vault_records WHERE id > ? ORDER BY id LIMIT 10000"
                batch = [r[0] for r in self.connection.execute(sql, (last,))]
                if not batch:
                    return count
                count += len(self._fetch(batch))
                last = batch[-1]

    def __len__(self) -> int:
        return int(self.connection.execute("SELECT count(*) FROM vault_records").fetchone()[0])
