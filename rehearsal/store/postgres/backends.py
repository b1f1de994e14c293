"""Creating and opening a memory's stores on a PostgreSQL server (the registry calls these)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rehearsal.crypto.keys import KeyRing
from rehearsal.store.postgres.connection import ServerConnection, connect, parse_location, server_errors
from rehearsal.store.postgres.records import ServerRecords
from rehearsal.store.postgres.schema import create_schema, read_manifest_row
from rehearsal.store.postgres.texts import ServerVault
from rehearsal.store.postgres.vectors import PgVectorIndex

__all__ = ["ServerStores", "create_server_stores", "open_server_stores", "read_server_manifest"]

ServerStores = tuple[ServerRecords, ServerVault | None, PgVectorIndex]


def create_server_stores(
    location: str, *, keys: KeyRing | None, dim: int, manifest: Mapping[str, Any]
) -> ServerStores:
    """A new memory in the location's schema: tables, manifest and vault keys in one transaction."""
    where = parse_location(location)
    conn = connect(where, read_only=False, register_vector=False)
    try:
        with server_errors(f"creating a memory at {where.display()}"), conn.raw.transaction():
            create_schema(conn, dim=dim, manifest=manifest, vault=keys is not None)
            if keys is not None:
                ServerVault.create(conn, keys)
        conn.close()
    except BaseException:
        conn.close()
        raise
    return open_server_stores(location, keys=keys, dim=dim, read_only=False)


def open_server_stores(
    location: str, *, keys: KeyRing | None, dim: int, read_only: bool, build_index: bool = True
) -> ServerStores:
    """The stores of an existing server memory, on one connection. ``build_index=False`` leaves pgvector's
    HNSW index unbuilt (for a caller that may search another vector index instead)."""
    conn = connect(parse_location(location), read_only=read_only)
    try:
        records = ServerRecords(conn, dim)
        vault = ServerVault.attach(conn, keys) if keys is not None else None
        vectors = PgVectorIndex(records)
        vectors.load()
        if not read_only and build_index:
            vectors.rebuild_if_outgrown()
    except BaseException:
        conn.close()
        raise
    return records, vault, vectors


def read_server_manifest(location: str) -> dict[str, Any]:
    """The manifest of the memory at ``location`` (StoreFormatError if there is none)."""
    conn: ServerConnection = connect(parse_location(location), read_only=True, register_vector=False)
    try:
        with server_errors("reading the memory's manifest"):
            return read_manifest_row(conn)
    finally:
        conn.close()
