"""The one module that names concrete backends: it opens a memory's stores from its location.

A location is a folder path (or a ``file://`` URL): the embedded default, one SQLite database holding the
records and the sealed texts, and a FAISS index that follows it. Or a ``postgresql://`` URL: a schema on a
PostgreSQL server holding the records, the sealed texts and the vectors (pgvector). Each backend
implements the same protocols (``rehearsal.store.protocols``); nothing above this module names one.

The vector index can be chosen apart from the records: ``vectors=None`` is the default (the FAISS index in
the folder, pgvector on PostgreSQL), ``vectors="milvus://HOST:PORT"`` a collection on a Milvus server
(named from the store id) that follows the record store. The choice is recorded in the record store when
the memory is created, so opening finds it (``vectors=`` given again overrides the recorded address).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sqlite3
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rehearsal._files import create_private
from rehearsal.crypto.keys import KeyRing
from rehearsal.errors import ConfigError, IntegrityError, RehearsalError, StoreFormatError
from rehearsal.store.authenticity import CatalogAuthenticator
from rehearsal.store.faiss.follower import FaissVectorIndex
from rehearsal.store.layout import DB_FILE, FORMAT_VERSION, acquire_writer_lock, write_manifest
from rehearsal.store.milvus.connection import SCHEMES as MILVUS_SCHEMES
from rehearsal.store.milvus.connection import parse_location as parse_milvus_location
from rehearsal.store.milvus.index import MilvusIndex
from rehearsal.store.protocols import KeyedStore, RecordStore, VectorIndex
from rehearsal.store.sqlite.connection import connect
from rehearsal.store.sqlite.head import GenerationHead
from rehearsal.store.sqlite.migrate import migrate_v1
from rehearsal.store.sqlite.records import SqliteRecords
from rehearsal.store.sqlite.texts import Vault
from rehearsal.store.urls import redact_url
from rehearsal.store.vectors_at_rest import FLOAT16, FLOAT32, reseal_rows

log = logging.getLogger(__name__)

# A catalog row holds a ~0.8 KB sealed vector: 4 KiB pages fit four rows and waste a sixth of each page,
# 16 KiB pages waste ~3% (at 20k x 384: 1,105 -> 951 bytes per entry apart from the text ciphertext).
_PAGE_SIZE = 16_384

__all__ = [
    "Backends",
    "create_backends",
    "create_server_backends",
    "folder_of",
    "is_server",
    "open_backends",
    "open_server_backends",
    "server_display",
    "server_manifest",
]


@dataclass
class Backends:
    """The stores of one open memory. ``keyed`` (texts, data keys and sealing) is None when unencrypted."""

    records: RecordStore
    keyed: KeyedStore | None
    vectors: VectorIndex

    def close(self) -> None:
        try:
            self.vectors.close()
        finally:
            self.records.close()


# Where the record store notes a vector index other than the folder's FAISS index.
_VECTORS_KEY = "vectors.backend"
_MILVUS_LOCATION_KEY = "vectors.milvus.location"
_MILVUS_COLLECTION_KEY = "vectors.milvus.collection"


def _vectors_meta(vectors: str | None, store_id: bytes | None) -> dict[str, str]:
    """What the record store records about a new memory's vector index (nothing for FAISS)."""
    if vectors is None:
        return {}
    scheme = _scheme(vectors)
    if scheme not in MILVUS_SCHEMES:
        raise ConfigError(
            f"no vector index for {scheme or redact_url(vectors)!r}; use vectors='milvus://HOST:PORT'"
        )
    name = store_id.hex() if store_id is not None else secrets.token_hex(16)
    return {
        _VECTORS_KEY: "milvus",
        _MILVUS_LOCATION_KEY: str(parse_milvus_location(vectors)),  # no password
        _MILVUS_COLLECTION_KEY: f"rehearsal_{name}",
    }


def _milvus_index(
    records: RecordStore,
    vectors: str | None,
    keyed: KeyedStore | None,
    dim: int,
    *,
    read_only: bool,
    at_rest: np.dtype,
) -> MilvusIndex:
    recorded = records.get_meta(_MILVUS_LOCATION_KEY)
    collection = records.get_meta(_MILVUS_COLLECTION_KEY)
    if recorded is None or collection is None:
        raise ConfigError("the memory records a Milvus vector index but not where it is")
    location = parse_milvus_location(vectors if vectors is not None else recorded)
    return MilvusIndex(location, collection, dim, records, keyed, read_only=read_only, at_rest=at_rest)


def _scheme(text: str) -> str:
    """The scheme of a URL, lower-cased ("" for a path), read without urlsplit, which raises on a
    malformed URL (an unclosed "[::1")."""
    scheme, sep, _ = text.partition("://")
    return scheme.lower() if sep and "/" not in scheme else ""


def folder_of(location: str | os.PathLike[str]) -> Path:
    """The folder of a location; a scheme no backend registers is a ConfigError."""
    text = os.fspath(location)
    scheme = _scheme(text)
    if scheme == "":
        return Path(text)
    if scheme == "file":
        try:
            return Path(urllib.parse.unquote(urllib.parse.urlsplit(text).path))
        except ValueError as exc:
            raise ConfigError(f"malformed file URL {redact_url(text)!r}: {exc}") from None
    raise ConfigError(f"no memory backend for {scheme!r} URLs; give a folder path or a file:// URL")


def _canonical(manifest: Mapping[str, Any]) -> str:
    return json.dumps(dict(manifest), sort_keys=True, separators=(",", ":"))


def _catalog(
    conn: sqlite3.Connection, folder: Path, vault: Vault | None, manifest: Mapping[str, Any]
) -> SqliteRecords:
    # Keyed by the store's internal data key when there are keys; a keyless store can only checksum, and
    # binds its tags to the manifest's store id (see rehearsal.store.authenticity).
    if vault is not None:
        auth = CatalogAuthenticator(vault.derive_key("catalog"), vault.store_id)
    else:
        auth = CatalogAuthenticator(None, str(manifest.get("store_id", "")).encode())
    return SqliteRecords(conn, auth, GenerationHead(folder, auth))


def create_backends(
    folder: Path,
    *,
    keys: KeyRing | None,
    dim: int,
    vectors: str | None = None,
    manifest: Mapping[str, Any] | None = None,
) -> Backends:
    """Empty stores in ``folder`` (which exists and holds no memory); ``vectors`` as in the module doc. The
    database keeps an authenticated copy of ``manifest`` (what ``memory.json`` will say)."""
    if vectors is not None:
        _vectors_meta(vectors, None)  # a bad location is refused before anything is written
    manifest = dict(manifest or {"format": FORMAT_VERSION})
    # Created owner-only before SQLite opens it: SQLite gives its WAL and shared-memory files the
    # database file's mode, where it would otherwise make all three world-readable under umask 022.
    create_private(folder / DB_FILE)
    conn = connect(folder / DB_FILE, page_size=_PAGE_SIZE)
    try:
        vault = Vault.attach(conn, keys, create=True) if keys is not None else None
        records = _catalog(conn, folder, vault, manifest)
        records.create_schema(_canonical(manifest))
        meta = _vectors_meta(vectors, vault.store_id if vault is not None else None)
        if not meta:
            faiss_index = FaissVectorIndex(folder, dim, records, vault)
            faiss_index.write_snapshot()
            return Backends(records, vault, faiss_index)
        with records.transaction():
            for key, value in meta.items():
                records.set_meta(key, value)
        milvus = _milvus_index(records, vectors, vault, dim, read_only=False, at_rest=FLOAT16)
        try:
            milvus.create()
        except BaseException:
            milvus.close()
            raise
    except BaseException:
        conn.close()
        raise
    return Backends(records, vault, milvus)


def open_backends(
    folder: Path,
    *,
    keys: KeyRing | None,
    dim: int,
    read_only: bool,
    vectors: str | None = None,
    manifest: Mapping[str, Any] | None = None,
) -> Backends:
    """The stores of an existing memory, the vector index caught up with the records.

    A writer migrates a format-1 store and rewrites an index copy that predates the last forget; a reader
    that finds either takes the writer's place for that when no writer holds the lock."""
    if read_only:
        stores = _open(folder, keys=keys, dim=dim, read_only=True, vectors=vectors, manifest=manifest)
        if not stores.vectors.holds_erased():
            return stores
        stores.close()
        _repair_as_writer(folder, keys=keys, dim=dim, vectors=vectors, manifest=manifest)
    return _open(folder, keys=keys, dim=dim, read_only=read_only, vectors=vectors, manifest=manifest)


def _open(
    folder: Path,
    *,
    keys: KeyRing | None,
    dim: int,
    read_only: bool,
    vectors: str | None,
    manifest: Mapping[str, Any] | None,
    retry: bool = True,
) -> Backends:
    conn = connect(folder / DB_FILE, read_only=read_only)
    try:
        vault = Vault.attach(conn, keys, create=False, read_only=read_only) if keys is not None else None
        records = _catalog(conn, folder, vault, manifest or {})
        records.check_schema()
        if records.format < 2:
            if read_only:
                conn.close()
                if not retry:
                    raise StoreFormatError(
                        f"the memory at {str(folder)!r} has format 1 and a writer holds it; it is migrated"
                        " to format 2 when next opened for writing"
                    )
                _repair_as_writer(folder, keys=keys, dim=dim, vectors=vectors, manifest=manifest)
                return _open(
                    folder,
                    keys=keys,
                    dim=dim,
                    read_only=True,
                    vectors=vectors,
                    manifest=manifest,
                    retry=False,
                )
            if manifest is None:
                raise StoreFormatError("a format-1 store migrates only when opened with its manifest")

            def reseal(rows: list[tuple[int, str, bytes]]) -> list[bytes]:
                return reseal_rows(vault, rows, dim, source=FLOAT32, target=FLOAT16)

            migrate_v1(records, reseal, _canonical({**manifest, "format": FORMAT_VERSION}))
        records.check_head()
        _check_manifest(folder, records, manifest, writable=not read_only)
        if not read_only:
            records.upgrade_seals()  # a store written before generation seals, once
            records.upgrade_head()  # and one whose head file records no commit nonces
        index: VectorIndex
        if records.get_meta(_VECTORS_KEY) == "milvus":
            index = _milvus_index(records, vectors, vault, dim, read_only=read_only, at_rest=FLOAT16)
        elif vectors is not None:
            raise ConfigError(
                f"the memory at {str(folder)!r} keeps its vectors in its folder, not in {vectors!r}"
            )
        else:
            index = FaissVectorIndex(folder, dim, records, vault)
        try:
            index.load()
            if not read_only:
                if index.holds_erased():
                    index.checkpoint(force=True)
                index.rebuild_if_outgrown()
        except BaseException:
            index.close()
            raise
    except BaseException:
        conn.close()
        raise
    return Backends(records, vault, index)


def _check_manifest(
    folder: Path, records: SqliteRecords, manifest: Mapping[str, Any] | None, *, writable: bool
) -> None:
    """IntegrityError unless ``memory.json`` says what the database's authenticated copy says (a format-1
    manifest beside a migrated database is the one difference allowed, and a writer rewrites it)."""
    if manifest is None:
        return
    stored = json.loads(records.get_meta("manifest", "{}") or "{}")
    if {**manifest, "format": stored.get("format")} != stored:
        changed = sorted(k for k in stored.keys() | manifest.keys() if stored.get(k) != manifest.get(k))
        raise IntegrityError(
            f"memory.json disagrees with the copy authenticated in the database (fields {changed}):"
            " the manifest was edited, or the database comes from another store"
        )
    if manifest.get("format") != stored.get("format") and writable:
        write_manifest(folder, stored)


def _repair_as_writer(
    folder: Path,
    *,
    keys: KeyRing | None,
    dim: int,
    vectors: str | None,
    manifest: Mapping[str, Any] | None,
) -> None:
    """Open the store once as its writer (migrating it, rewriting an index copy that still holds forgotten
    vectors), if no writer holds the lock; a live writer did that when it opened."""
    try:
        lock_fd = acquire_writer_lock(folder)
    except (RehearsalError, OSError):
        return
    try:
        _open(folder, keys=keys, dim=dim, read_only=False, vectors=vectors, manifest=manifest).close()
    except (RehearsalError, OSError, sqlite3.Error) as exc:
        # Best effort (a read-only file system, say): this reader still serves nothing forgotten, since
        # it replays the forget's removals; a format-1 store is then refused by the reopen.
        log.warning("could not repair the memory at %s as its writer: %s", folder, exc)
    finally:
        os.close(lock_fd)


# -- server memories (PostgreSQL + pgvector) ------------------------------------------------------------


def is_server(location: str | os.PathLike[str]) -> bool:
    """Whether ``location`` names a memory on a server (a ``postgresql://`` URL) rather than a folder."""
    return _scheme(os.fspath(location)) in ("postgresql", "postgres")


def _postgres() -> Any:
    try:
        from rehearsal.store.postgres import backends
    except ImportError as exc:
        raise ConfigError(
            f"postgresql:// memories need the 'postgres' extra (pip install 'rehearsal[postgres]'): {exc}"
        ) from None
    return backends


def server_display(location: str) -> str:
    """The server location without its password, for messages and reprs."""
    from rehearsal.store.postgres.connection import parse_location

    return parse_location(location).display()


def server_location_without_password(location: str) -> str:
    """``location`` without its password, which moves to where the server's client library reads it (for
    this process): a location safe to echo that still connects. ConfigError (redacted) if malformed."""
    from rehearsal.store.postgres.connection import move_password_to_environment

    return move_password_to_environment(location)


def server_manifest(location: str) -> dict[str, Any]:
    """The manifest stored with a server memory."""
    manifest: dict[str, Any] = _postgres().read_server_manifest(location)
    return manifest


def create_server_backends(
    location: str,
    *,
    keys: KeyRing | None,
    dim: int,
    manifest: Mapping[str, Any],
    vectors: str | None = None,
) -> Backends:
    """A new memory in the server schema ``location`` names, its manifest stored with it."""
    if vectors is not None:
        _vectors_meta(vectors, None)  # a bad location is refused before anything is written
    records, vault, index = _postgres().create_server_stores(location, keys=keys, dim=dim, manifest=manifest)
    if vectors is None:
        return Backends(records, vault, index)
    try:
        with records.transaction():
            for key, value in _vectors_meta(vectors, vault.store_id if vault is not None else None).items():
                records.set_meta(key, value)
        # The server's records keep the vectors as float32 in the clear already (pgvector): nothing to seal.
        milvus = _milvus_index(records, vectors, None, dim, read_only=False, at_rest=FLOAT32)
        try:
            milvus.create()
        except BaseException:
            milvus.discard()  # a collection made before the failure
            raise
    except BaseException as exc:
        records.close()
        _postgres().abandon_server_memory(location, exc)  # no half-made schema left to block a retry
        raise
    return Backends(records, vault, milvus)


def open_server_backends(
    location: str,
    *,
    keys: KeyRing | None,
    dim: int,
    read_only: bool,
    manifest: Mapping[str, Any],
    vectors: str | None = None,
) -> Backends:
    """The stores of a server memory whose ``manifest`` was read by :func:`server_manifest`."""
    # pgvector's index is built only for a memory that searches it (not one whose vectors are in Milvus).
    records, vault, index = _postgres().open_server_stores(
        location, keys=keys, dim=dim, read_only=read_only, manifest=manifest, build_index=False
    )
    try:
        if records.get_meta(_VECTORS_KEY) != "milvus":
            if vectors is not None:
                raise ConfigError(f"the memory at {server_display(location)} keeps its vectors in pgvector")
            if not read_only:
                index.rebuild_if_outgrown()
            return Backends(records, vault, index)
        milvus = _milvus_index(records, vectors, None, dim, read_only=read_only, at_rest=FLOAT32)
        try:
            milvus.load()
            if not read_only and milvus.holds_erased():
                milvus.checkpoint(force=True)
        except BaseException:
            milvus.close()
            raise
    except BaseException:
        records.close()
        raise
    return Backends(records, vault, milvus)
