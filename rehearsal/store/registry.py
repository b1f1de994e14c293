"""The one module that names concrete backends: it opens a memory's stores from its location.

A location is a folder path (or a ``file://`` URL): the embedded default, one SQLite database holding the
records and the sealed texts, and a FAISS index that follows it. Or a ``postgresql://`` URL: a schema on a
PostgreSQL server holding the records, the sealed texts and the vectors (pgvector). Each backend
implements the same protocols (``rehearsal.store.protocols``); nothing above this module names one.
"""

from __future__ import annotations

import os
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
        self.records.close()


def folder_of(location: str | os.PathLike[str]) -> Path:
    """The folder of a location; a scheme no backend registers is a ConfigError."""
    text = os.fspath(location)
    scheme = urllib.parse.urlsplit(text).scheme if "://" in text else ""
    if scheme == "":
        return Path(text)
    if scheme == "file":
        return Path(urllib.parse.unquote(urllib.parse.urlsplit(text).path))
    raise ConfigError(f"no memory backend for {scheme!r} URLs; give a folder path or a file:// URL")


def create_backends(folder: Path, *, keys: KeyRing | None, dim: int) -> Backends:
    """Empty stores in ``folder`` (which exists and holds no memory)."""
    # Created owner-only before SQLite opens it: SQLite gives its WAL and shared-memory files the
    # database file's mode, where it would otherwise make all three world-readable under umask 022.
    create_private(folder / DB_FILE)
    conn = connect(folder / DB_FILE)
    vault = Vault.attach(conn, keys, create=True) if keys is not None else None
    records = Catalog(conn)
    records.create_schema({"generation": "0", "next_id": "0"})
    vectors = FaissVectorIndex(folder, dim, records, vault)
    vectors.write_snapshot()
    return Backends(records, vault, vectors)


def open_backends(folder: Path, *, keys: KeyRing | None, dim: int, read_only: bool) -> Backends:
    """The stores of an existing memory, the vector index caught up with the records."""
    conn = connect(folder / DB_FILE, read_only=read_only)
    try:
        records = Catalog(conn)
        records.check_schema()
        vault = Vault.attach(conn, keys, create=False, read_only=read_only) if keys is not None else None
        vectors = FaissVectorIndex(folder, dim, records, vault)
        vectors.load()
        if not read_only:
            vectors.rebuild_if_outgrown()
    except BaseException:
        conn.close()
        raise
    return Backends(records, vault, vectors)


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
    location: str, *, keys: KeyRing | None, dim: int, manifest: Mapping[str, Any]
) -> Backends:
    """A new memory in the server schema ``location`` names, its manifest stored with it."""
    records, vault, vectors = _postgres().create_server_stores(
        location, keys=keys, dim=dim, manifest=manifest
    )
    return Backends(records, vault, vectors)


def open_server_backends(location: str, *, keys: KeyRing | None, dim: int, read_only: bool) -> Backends:
    records, vault, vectors = _postgres().open_server_stores(
        location, keys=keys, dim=dim, read_only=read_only
    )
    return Backends(records, vault, vectors)
