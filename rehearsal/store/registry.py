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

import os
import secrets
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rehearsal._files import create_private
from rehearsal.crypto.keys import KeyRing
from rehearsal.errors import ConfigError
from rehearsal.store.faiss.follower import FaissVectorIndex
from rehearsal.store.layout import DB_FILE
from rehearsal.store.milvus.connection import SCHEMES as MILVUS_SCHEMES
from rehearsal.store.milvus.connection import parse_location as parse_milvus_location
from rehearsal.store.milvus.index import MilvusVectorIndex
from rehearsal.store.protocols import KeyedStore, RecordStore, VectorIndex
from rehearsal.store.sqlite.connection import connect
from rehearsal.store.sqlite.records import Catalog
from rehearsal.store.sqlite.texts import Vault

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
    scheme = urllib.parse.urlsplit(vectors).scheme
    if scheme not in MILVUS_SCHEMES:
        raise ConfigError(f"no vector index for {scheme or vectors!r}; use vectors='milvus://HOST:PORT'")
    name = store_id.hex() if store_id is not None else secrets.token_hex(16)
    return {
        _VECTORS_KEY: "milvus",
        _MILVUS_LOCATION_KEY: str(parse_milvus_location(vectors)),  # no password
        _MILVUS_COLLECTION_KEY: f"rehearsal_{name}",
    }


def _milvus_index(
    records: RecordStore, vectors: str | None, keyed: KeyedStore | None, dim: int, *, read_only: bool
) -> MilvusVectorIndex:
    recorded = records.get_meta(_MILVUS_LOCATION_KEY)
    collection = records.get_meta(_MILVUS_COLLECTION_KEY)
    if recorded is None or collection is None:
        raise ConfigError("the memory records a Milvus vector index but not where it is")
    location = parse_milvus_location(vectors if vectors is not None else recorded)
    return MilvusVectorIndex(location, collection, dim, records, keyed, read_only=read_only)


def folder_of(location: str | os.PathLike[str]) -> Path:
    """The folder of a location; a scheme no backend registers is a ConfigError."""
    text = os.fspath(location)
    scheme = urllib.parse.urlsplit(text).scheme if "://" in text else ""
    if scheme == "":
        return Path(text)
    if scheme == "file":
        return Path(urllib.parse.unquote(urllib.parse.urlsplit(text).path))
    raise ConfigError(f"no memory backend for {scheme!r} URLs; give a folder path or a file:// URL")


def create_backends(folder: Path, *, keys: KeyRing | None, dim: int, vectors: str | None = None) -> Backends:
    """Empty stores in ``folder`` (which exists and holds no memory); ``vectors`` as in the module doc."""
    if vectors is not None:
        _vectors_meta(vectors, None)  # a bad location is refused before anything is written
    # Created owner-only before SQLite opens it: SQLite gives its WAL and shared-memory files the
    # database file's mode, where it would otherwise make all three world-readable under umask 022.
    create_private(folder / DB_FILE)
    conn = connect(folder / DB_FILE)
    vault = Vault.attach(conn, keys, create=True) if keys is not None else None
    records = Catalog(conn)
    try:
        meta = _vectors_meta(vectors, vault.store_id if vault is not None else None)
        records.create_schema({"generation": "0", "next_id": "0", **meta})
        if meta:
            milvus = _milvus_index(records, vectors, vault, dim, read_only=False)
            index: VectorIndex = milvus
            try:
                milvus.create()
            except BaseException:
                milvus.close()
                raise
        else:
            faiss_index = FaissVectorIndex(folder, dim, records, vault)
            faiss_index.write_snapshot()
            index = faiss_index
    except BaseException:
        conn.close()
        raise
    return Backends(records, vault, index)


def open_backends(
    folder: Path, *, keys: KeyRing | None, dim: int, read_only: bool, vectors: str | None = None
) -> Backends:
    """The stores of an existing memory, the vector index caught up with the records."""
    conn = connect(folder / DB_FILE, read_only=read_only)
    try:
        records = Catalog(conn)
        records.check_schema()
        vault = Vault.attach(conn, keys, create=False, read_only=read_only) if keys is not None else None
        index: VectorIndex
        if records.get_meta(_VECTORS_KEY) == "milvus":
            index = _milvus_index(records, vectors, vault, dim, read_only=read_only)
        elif vectors is not None:
            raise ConfigError(
                f"the memory at {str(folder)!r} keeps its vectors in its folder, not in {vectors!r}"
            )
        else:
            index = FaissVectorIndex(folder, dim, records, vault)
        try:
            index.load()
            if not read_only:
                index.rebuild_if_outgrown()
        except BaseException:
            index.close()
            raise
    except BaseException:
        conn.close()
        raise
    return Backends(records, vault, index)


# -- server memories (PostgreSQL + pgvector) ------------------------------------------------------------


def is_server(location: str | os.PathLike[str]) -> bool:
    """Whether ``location`` names a memory on a server (a ``postgresql://`` URL) rather than a folder."""
    text = os.fspath(location)
    return "://" in text and urllib.parse.urlsplit(text).scheme in ("postgresql", "postgres")


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
        # The server's records keep the vectors in the clear already (pgvector): nothing to seal.
        milvus = _milvus_index(records, vectors, None, dim, read_only=False)
        try:
            milvus.create()
        except BaseException:
            milvus.close()
            raise
    except BaseException:
        records.close()
        raise
    return Backends(records, vault, milvus)


def open_server_backends(
    location: str, *, keys: KeyRing | None, dim: int, read_only: bool, vectors: str | None = None
) -> Backends:
    # pgvector's index is built only for a memory that searches it (not one whose vectors are in Milvus).
    records, vault, index = _postgres().open_server_stores(
        location, keys=keys, dim=dim, read_only=read_only, build_index=False
    )
    try:
        if records.get_meta(_VECTORS_KEY) != "milvus":
            if vectors is not None:
                raise ConfigError(f"the memory at {server_display(location)} keeps its vectors in pgvector")
            if not read_only:
                index.rebuild_if_outgrown()
            return Backends(records, vault, index)
        milvus = _milvus_index(records, vectors, None, dim, read_only=read_only)
        try:
            milvus.load()
        except BaseException:
            milvus.close()
            raise
    except BaseException:
        records.close()
        raise
    return Backends(records, vault, milvus)
