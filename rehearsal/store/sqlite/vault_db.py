"""The vault's SQLite database: connection settings, schema, the master-key check and transactions.

The vault's tables and what they hold are described in :mod:`rehearsal.store.sqlite.texts`; data keys are
:mod:`rehearsal.crypto.data_keys`'s, kept in their tables by :mod:`rehearsal.store.sqlite.key_table`.
Opening checks the master key before anything is read.
"""

from __future__ import annotations

import logging
import operator
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import TypeVar

from rehearsal.crypto.data_keys import DataKeys, check_master_key, master_key_meta
from rehearsal.crypto.keys import KeyRing
from rehearsal.errors import NotFoundError, ReadOnlyError, StoreFormatError, ValidationError
from rehearsal.store.sqlite.connection import connect
from rehearsal.store.sqlite.key_table import SqliteKeyTable

__all__ = ["CHUNK", "FORMAT_VERSION", "SHOW", "VaultDatabase", "check_ids", "in_sql", "log"]

V = TypeVar("V", bound="VaultDatabase")


FORMAT_VERSION = 1
MAX_ID = 2**63 - 1
CHUNK = 900  # bound parameters per statement: under SQLite's historical limit of 999
SHOW = 5  # ids quoted in an error message
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
def in_sql(template: str, n: int) -> str:
    return template.format(",".join("?" * n))


def check_ids(ids: Sequence[int], *, unique: bool, what: str = "record ids") -> list[int]:
    if isinstance(ids, str | bytes) or not hasattr(ids, "__len__"):
        raise ValidationError(f"{what} must be a sequence of ints, got {type(ids).__name__}")
    out = list(ids)
    for pos, value in enumerate(out):
        if type(value) is not int:
            if isinstance(value, bool) or not hasattr(value, "__index__"):
                raise ValidationError(f"{what} must be ints, got {type(value).__name__} at position {pos}")
            out[pos] = operator.index(value)  # numpy integers, e.g. ids straight from FAISS
    if out and (min(out) < 0 or max(out) > MAX_ID):
        bad = next(i for i in out if not 0 <= i <= MAX_ID)
        raise ValidationError(f"{what} must be in [0, 2**63-1], got {bad}")
    if unique and len(set(out)) != len(out):
        seen: set[int] = set()
        dups = [i for i in out if i in seen or seen.add(i)]  # type: ignore[func-returns-value]
        raise ValidationError(f"duplicate {what} in one call: {dups[:SHOW]}")
    return out


class VaultDatabase:
    """The vault's database: its connection, schema and master-key check, and its transactions. The
    records themselves are :class:`~rehearsal.store.sqlite.texts.Vault`'s."""

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
        self._data_keys = DataKeys(
            SqliteKeyTable(conn), keys, store_id=self.store_id, max_encryptions_per_key=limit
        )

    # -- opening ------------------------------------------------------------------------------------------

    @classmethod
    def create(
        cls: type[V], path: str | os.PathLike[str], keys: KeyRing, *, max_encryptions_per_key: int = 2**30
    ) -> V:
        """A new vault in the SQLite file ``path``, which must not exist."""
        p = os.fspath(path)
        if os.path.lexists(p):
            raise ValidationError(f"cannot create a vault at {p!r}: it already exists")
        parent = os.path.dirname(os.path.abspath(p))
        if not os.path.isdir(parent):
            # SQLite would say only "unable to open database file".
            raise NotFoundError(f"cannot create a vault at {p!r}: folder {parent!r} does not exist")
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
        cls: type[V],
        path: str | os.PathLike[str],
        keys: KeyRing,
        *,
        read_only: bool = False,
        max_encryptions_per_key: int = 2**30,
    ) -> V:
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
        cls: type[V],
        conn: sqlite3.Connection,
        keys: KeyRing,
        *,
        create: bool,
        read_only: bool = False,
        max_encryptions_per_key: int = 2**30,
    ) -> V:
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
        damaged = not isinstance(meta.get("store_id"), bytes) or not isinstance(meta.get("kek_check"), bytes)
        if not isinstance(version, int) or damaged:
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
                # After SQLITE_FULL or an I/O error SQLite has already rolled back the whole transaction,
                # savepoint included: undoing it again would raise and hide that error.
                if conn.in_transaction:
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
            if conn.in_transaction:  # see above: SQLite may have rolled back already
                conn.execute("ROLLBACK")
            self._checkpoint_pending = False
            raise
        conn.execute("COMMIT")
        if self._checkpoint_pending:
            try:
                self.checkpoint()
            except (sqlite3.Error, OSError) as exc:
                # Committed is committed: the caller must not be told otherwise (nor stop halfway through
                # what follows its commit). The deleted bytes stay in the WAL until the next checkpoint.
                self._checkpoint_pending = True
                log.warning(
                    "committed, but the WAL checkpoint after it failed (%s); retried next commit", exc
                )

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

    def close(self) -> None:
        """Close the connection if this vault opened it; an attached connection stays open."""
        self._data_keys.cache.clear()
        if self._owns:
            self.connection.close()

    def __enter__(self: V) -> V:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = repr(self._path) if self._path else "<attached>"
        mode = ", read_only=True" if self._read_only else ""
        return f"Vault(path={where}, store_id={self.store_id.hex()!r}, keys={self._data_keys.keys!r}{mode})"
