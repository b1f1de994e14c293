"""The one module that names concrete backends: it opens a memory's stores from its location.

A location is a folder path (or a ``file://`` URL): the embedded default, one SQLite database holding the
records and the sealed texts, and a FAISS index that follows it. A server backend registers another
scheme here and implements the same protocols (``rehearsal.store.protocols``); nothing above this module
changes.
"""

from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from rehearsal._files import create_private
from rehearsal.crypto.keys import KeyRing
from rehearsal.errors import ConfigError
from rehearsal.store.faiss.follower import FaissVectorIndex
from rehearsal.store.layout import DB_FILE
from rehearsal.store.protocols import KeyedStore, RecordStore, VectorIndex
from rehearsal.store.sqlite.connection import connect
from rehearsal.store.sqlite.records import Catalog
from rehearsal.store.sqlite.texts import Vault

__all__ = ["Backends", "create_backends", "folder_of", "open_backends"]


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
