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

import logging
import operator
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache

from cryptography.exceptions import InvalidTag

from rehearsal.crypto.data_keys import (
    TEXT_PURPOSE,
    DataKeys,
    check_internal_tenant,
    check_master_key,
    check_purpose,
    master_key_meta,
)
from rehearsal.crypto.keys import RESERVED_TENANTS, KeyRing, validate_tenant
from rehearsal.errors import (
    IntegrityError,
    NotFoundError,
    ReadOnlyError,
    StoreFormatError,
    ValidationError,
)
from rehearsal.store.sqlite.connection import connect

__all__ = ["FORMAT_VERSION", "TEXT_PURPOSE", "Vault"]

FORMAT_VERSION = 1
_MAX_ID = 2**63 - 1
_CHUNK = 900  # bound parameters per statement: under SQLite's historical limit of 999
_SHOW = 5  # ids quoted in an error message
_SCHEMA = (
    "CREATE TABLE vault_meta (name TEXT PRIMARY KEY, value BLOB NOT NULL)",
    "CREATE TABLE vault_tenants (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)",
    "CREATE TABLE vault_keys (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL, version INTEGER NOT NULL,"
    " wrapped BLOB NOT NULL, encryptions INTEGER NOT NULL, UNIQUE (tenant_id, version))",
    "CREATE TABLE vault_records (id INTEGER PRIMARY KEY, key_id INTEGER NOT NULL, sealed BLOB NOT NULL)",
    "CREATE INDEX vault_records_key ON vault_records (key_id)",
)

# The name it had before the move into store/, so existing logging configurations keep working.
log = logging.getLogger("rehearsal.vault")


@lru_cache(maxsize=64)
def _in_sql(template: str, n: int) -> str:
    return template.format(",".join("?" * n))


def _check_ids(ids: Sequence[int], *, unique: bool, what: str = "record ids") -> list[int]:
    if isinstance(ids, str | bytes) or not hasattr(ids, "__len__"):
        raise ValidationError(f"{what} must be a sequence of ints, got {type(ids).__name__}")
    out = list(ids)
    for pos, value in enumerate(out):
        if type(value) is not int:
            if isinstance(value, bool) or not hasattr(value, "__index__"):
                raise ValidationError(f"{what} must be ints, got {type(value).__name__} at position {pos}")
            out[pos] = operator.index(value)  # numpy integers, e.g. ids straight from FAISS
    if out and (min(out) < 0 or max(out) > _MAX_ID):
        bad = next(i for i in out if not 0 <= i <= _MAX_ID)
        raise ValidationError(f"{what} must be in [0, 2**63-1], got {bad}")
    if unique and len(set(out)) != len(out):
        seen: set[int] = set()
        dups = [i for i in out if i in seen or seen.add(i)]  # type: ignore[func-returns-value]
        raise ValidationError(f"duplicate {what} in one call: {dups[:_SHOW]}")
    return out


class Vault:
    """Encrypted text records keyed by non-negative int ids, each owned by a tenant with its own data key."""

    store_id: bytes
    connection: sqlite3.Connection

    def __init__(
        self,
        conn: sqlite3.Connection,
        keys: KeyRing,
        *,
        create: bool,
        read_only: bool,
        owns_connection: bool,
        max_encryptions_per_key: int,
        path: str | None,
    ) -> None:
        """Use :meth:`create`, :meth:`open` or :meth:`attach`."""
        if not isinstance(keys, KeyRing):
            raise ValidationError(f"keys must be a KeyRing, got {type(keys).__name__}")
        limit = max_encryptions_per_key
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 2**32:
            raise ValidationError(f"max_encryptions_per_key must be an int in [1, 2**32], got {limit!r}")
        if create and read_only:
            raise ValidationError("a vault cannot be created read-only")
        if conn.isolation_level is not None:
            raise ValidationError("the connection must be opened with isolation_level=None (autocommit)")
        self.connection = conn
        self._read_only = read_only
        self._owns = owns_connection
        self._path = path
        self._savepoints = 0
        self._checkpoint_pending = False
        try:
            if not read_only and not conn.in_transaction:
                conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")  # an acknowledged put survives power loss
            conn.execute("PRAGMA secure_delete=ON")  # shredded rows are zeroed, not left in free space
            if owns_connection:
                # Random-id batch reads touch pages all over the file; with SQLite's 2 MiB default cache
                # each becomes a read() syscall, which costs more than the decryption itself.
                conn.execute("PRAGMA cache_size=-65536")
            if create:
                self._create_schema(keys)
            self._load_meta(keys)
        except sqlite3.DatabaseError as exc:
            raise StoreFormatError(
                f"{path or 'the database'} is not a readable SQLite vault: {exc}"
            ) from None
        self._data_keys = DataKeys(conn, keys, store_id=self.store_id, max_encryptions_per_key=limit)

    # -- opening ------------------------------------------------------------------------------------------

    @classmethod
    def create(
        cls, path: str | os.PathLike[str], keys: KeyRing, *, max_encryptions_per_key: int = 2**30
    ) -> Vault:
        """A new vault in the SQLite file ``path``, which must not exist."""
        p = os.fspath(path)
        if os.path.lexists(p):
            raise ValidationError(f"cannot create a vault at {p!r}: it already exists")
        conn = connect(p, read_only=False, what="vault")
        try:
            return cls(
                conn,
                keys,
                create=True,
                read_only=False,
                owns_connection=True,
                max_encryptions_per_key=max_encryptions_per_key,
                path=p,
            )
        except BaseException:
            conn.close()
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(p + suffix):
                    os.remove(p + suffix)
            raise

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        keys: KeyRing,
        *,
        read_only: bool = False,
        max_encryptions_per_key: int = 2**30,
    ) -> Vault:
        """An existing vault; :class:`WrongKeyError` if ``keys`` is not its master key."""
        p = os.fspath(path)
        if not os.path.isfile(p):
            raise NotFoundError(f"no vault at {p!r}")
        conn = connect(p, read_only=read_only, what="vault")
        try:
            return cls(
                conn,
                keys,
                create=False,
                read_only=read_only,
                owns_connection=True,
                max_encryptions_per_key=max_encryptions_per_key,
                path=p,
            )
        except BaseException:
            conn.close()
            raise

    @classmethod
    def attach(
        cls,
        conn: sqlite3.Connection,
        keys: KeyRing,
        *,
        create: bool,
        read_only: bool = False,
        max_encryptions_per_key: int = 2**30,
    ) -> Vault:
        """A vault inside a connection owned by the caller (opened with ``isolation_level=None``).

        Sets ``synchronous=FULL`` and ``secure_delete=ON`` on it (and WAL when writable); :meth:`close`
        leaves it open. If the caller wraps ``shred`` in its own raw ``BEGIN``, it should call
        :meth:`checkpoint` after committing so the shredded bytes leave the WAL file.
        """
        return cls(
            conn,
            keys,
            create=create,
            read_only=read_only,
            owns_connection=False,
            max_encryptions_per_key=max_encryptions_per_key,
            path=None,
        )

    def _create_schema(self, keys: KeyRing) -> None:
        exists = self.connection.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='vault_meta'"
        ).fetchone()
        if exists:
            raise ValidationError("the database already holds a vault")
        store_id = os.urandom(16)
        with self.transaction():
            for statement in _SCHEMA:
                self.connection.execute(statement)
            self.connection.executemany(
                "INSERT INTO vault_meta (name, value) VALUES (?, ?)",
                [
                    ("format_version", FORMAT_VERSION),
                    ("store_id", store_id),
                    *master_key_meta(keys, store_id),
                ],
            )

    def _load_meta(self, keys: KeyRing) -> None:
        try:
            meta = dict(self.connection.execute("SELECT name, value FROM vault_meta").fetchall())
        except sqlite3.OperationalError:
            raise StoreFormatError(f"{self._path or 'the database'} is not a rehearsal vault") from None
        version = meta.get("format_version")
        if not isinstance(version, int) or not isinstance(meta.get("store_id"), bytes):
            raise StoreFormatError(f"{self._path or 'the database'} has a damaged vault_meta table")
        if version > FORMAT_VERSION:
            raise StoreFormatError(
                f"vault format version {version} is newer than this library supports ({FORMAT_VERSION})"
            )
        self.store_id = meta["store_id"]
        check_master_key(keys, self.store_id, meta)

    # -- transactions -------------------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on exception). Inside an open transaction it becomes a
        SAVEPOINT, so a failing nested call undoes only its own work and the outer transaction goes on."""
        conn = self.connection
        if conn.in_transaction:
            name = f"vault_sp{self._savepoints}"
            self._savepoints += 1
            conn.execute(f"SAVEPOINT {name}")
            try:
                yield
            except BaseException:
                conn.execute(f"ROLLBACK TO {name}")
                conn.execute(f"RELEASE {name}")
                raise
            else:
                conn.execute(f"RELEASE {name}")
            finally:
                self._savepoints -= 1
            return
        conn.execute("BEGIN" if self._read_only else "BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            self._checkpoint_pending = False
            raise
        conn.execute("COMMIT")
        if self._checkpoint_pending:
            self.checkpoint()

    @contextmanager
    def _snapshot(self) -> Iterator[None]:
        # Reads spanning several statements see one consistent state of the database.
        if self.connection.in_transaction:
            yield
            return
        self.connection.execute("BEGIN")
        try:
            yield
        finally:
            self.connection.execute("COMMIT")

    def checkpoint(self) -> None:
        """Copy the WAL into the main file and truncate it, so deleted bytes do not linger in the WAL."""
        self._checkpoint_pending = False
        if self._read_only or self.connection.in_transaction:
            return
        busy, _, _ = self.connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            log.warning(
                "WAL checkpoint was blocked by a reader; deleted records stay in the WAL until the next one"
            )

    def _writable(self) -> None:
        if self._read_only:
            raise ReadOnlyError("this vault was opened read-only")

    # -- records ------------------------------------------------------------------------------------------

    def put(self, ids: Sequence[int], texts: Sequence[str], *, tenant: str | Sequence[str]) -> None:
        """Store new records; ids must be unused non-negative ints. All or nothing."""
        self._writable()
        id_list = _check_ids(ids, unique=True)
        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise ValidationError(f"texts must be a sequence of str, got {type(texts).__name__}")
        if len(texts) != len(id_list):
            raise ValidationError(f"got {len(id_list)} ids but {len(texts)} texts")
        if isinstance(tenant, str):
            owners = [validate_tenant(tenant)] * len(id_list)
        elif isinstance(tenant, Sequence) and len(tenant) == len(id_list):
            owners = [validate_tenant(t) for t in tenant]
        else:
            raise ValidationError("tenant must be a str or a sequence of str as long as ids")
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
                raise ValidationError(f"record ids already exist: {taken[:_SHOW]}")
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
        for start in range(0, len(id_list), _CHUNK):
            chunk = id_list[start : start + _CHUNK]
            sql = _in_sql("SELECT id FROM vault_records WHERE id IN ({}) ORDER BY id", len(chunk))
            found.extend(r[0] for r in self.connection.execute(sql, chunk))
        return found

    def _fetch(self, id_list: list[int]) -> dict[int, str]:
        uniq = sorted(set(id_list))
        out: dict[int, str] = {}
        dek, load = self._data_keys.cache, self._data_keys.load
        with self._snapshot():
            for start in range(0, len(uniq), _CHUNK):
                chunk = uniq[start : start + _CHUNK]
                sql = _in_sql("SELECT id, key_id, sealed FROM vault_records WHERE id IN ({})", len(chunk))
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
        id_list = _check_ids(ids, unique=False)
        found = self._fetch(id_list)
        if len(found) != len(set(id_list)):
            missing = sorted({i for i in id_list if i not in found})
            raise NotFoundError(f"{len(missing)} record ids not in the vault: {missing[:_SHOW]}")
        return [found[i] for i in id_list]

    def get_present(self, ids: Sequence[int]) -> dict[int, str]:
        """The texts of those ``ids`` that exist (missing ids are skipped)."""
        return self._fetch(_check_ids(ids, unique=False))

    def delete(self, ids: Sequence[int]) -> int:
        """Remove records; :class:`NotFoundError` (and nothing removed) if any id is unknown."""
        self._writable()
        id_list = _check_ids(ids, unique=True)
        with self.transaction():
            present = set(self._existing(id_list))
            if len(present) != len(id_list):
                missing = sorted(set(id_list) - present)
                raise NotFoundError(f"{len(missing)} record ids not in the vault: {missing[:_SHOW]}")
            for start in range(0, len(id_list), _CHUNK):
                chunk = id_list[start : start + _CHUNK]
                self.connection.execute(
                    _in_sql("DELETE FROM vault_records WHERE id IN ({})", len(chunk)), chunk
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
        with self.transaction():
            rewrapped = self._data_keys.rewrap_all(new_keys)
            self._checkpoint_pending = True
        # Only once the new wrappings are committed: a failed rotation leaves the old key in use.
        self._data_keys.keys = new_keys
        log.info(
            "master key rotated from %s to %s (%d data keys rewrapped)",
            old.fingerprint,
            new_keys.fingerprint,
            rewrapped,
        )

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
        id_list = _check_ids(record_ids, unique=False)
        if isinstance(datas, bytes | str) or len(datas) != len(id_list):
            raise ValidationError("datas must be a sequence of bytes as long as record_ids")
        for pos, data in enumerate(datas):
            if not isinstance(data, bytes | bytearray | memoryview):
                raise ValidationError(f"datas[{pos}] must be bytes, got {type(data).__name__}")
        if not id_list:
            return []
        with self.transaction():
            return self._data_keys.seal_blobs(tenant, id_list, [bytes(d) for d in datas], purpose)

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
        id_list = _check_ids(record_ids, unique=False)
        if isinstance(blobs, bytes | str) or len(blobs) != len(id_list):
            raise ValidationError("blobs must be a sequence of bytes as long as record_ids")
        with self._snapshot():
            return self._data_keys.open_blobs(tenant, id_list, blobs, purpose)

    # -- inspection ---------------------------------------------------------------------------------------

    def tenants(self) -> list[str]:
        """User tenants holding a data key, sorted (the reserved ``"_system"`` is not listed)."""
        names = [r[0] for r in self.connection.execute("SELECT name FROM vault_tenants ORDER BY name")]
        return [n for n in names if n not in RESERVED_TENANTS]

    def tenant_of(self, ids: Sequence[int]) -> dict[int, str]:
        """The owning tenant of each id; :class:`NotFoundError` naming missing ids."""
        id_list = _check_ids(ids, unique=False)
        out: dict[int, str] = {}
        with self._snapshot():
            for start in range(0, len(id_list), _CHUNK):
                chunk = id_list[start : start + _CHUNK]
                sql = _in_sql(
                    "SELECT r.id, t.name FROM vault_records r JOIN vault_keys k ON k.id = r.key_id"
                    " JOIN vault_tenants t ON t.id = k.tenant_id WHERE r.id IN ({})",
                    len(chunk),
                )
                out.update(self.connection.execute(sql, chunk).fetchall())
        missing = sorted(set(id_list) - out.keys())
        if missing:
            raise NotFoundError(f"{len(missing)} record ids not in the vault: {missing[:_SHOW]}")
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

    def close(self) -> None:
        """Close the connection if this vault opened it; an attached connection stays open."""
        self._data_keys.cache.clear()
        if self._owns:
            self.connection.close()

    def __enter__(self) -> Vault:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = repr(self._path) if self._path else "<attached>"
        mode = ", read_only=True" if self._read_only else ""
        return f"Vault(path={where}, store_id={self.store_id.hex()!r}, keys={self._data_keys.keys!r}{mode})"
