"""Creating and opening a memory's stores on a PostgreSQL server (the registry calls these)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from rehearsal.crypto.keys import KeyRing
from rehearsal.errors import IntegrityError, RehearsalError, StorageError
from rehearsal.store.authenticity import CatalogAuthenticator
from rehearsal.store.postgres.connection import ServerConnection, connect, parse_location, server_errors
from rehearsal.store.postgres.records import ServerRecords
from rehearsal.store.postgres.rowset import migrate_to_format3
from rehearsal.store.postgres.schema import create_schema, ensure_touch, read_manifest_row
from rehearsal.store.postgres.texts import ServerVault
from rehearsal.store.postgres.vectors import PgVectorIndex

__all__ = [
    "ServerStores",
    "abandon_server_memory",
    "create_server_stores",
    "open_server_stores",
    "read_server_manifest",
]

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
            vault = ServerVault.create(conn, keys) if keys is not None else None
            ServerRecords(conn, dim, _authenticator(vault, manifest)).seal_commit()
        conn.close()
    except BaseException:
        conn.close()
        raise
    try:
        return open_server_stores(location, keys=keys, dim=dim, read_only=False, manifest=manifest)
    except BaseException as exc:
        abandon_server_memory(location, exc)
        raise


def abandon_server_memory(location: str, failure: BaseException) -> None:
    """Drop the schema of a memory whose creation failed after its tables committed, so that the same
    ``create`` can be run again (the schema is this creation's own: ``create_schema`` refuses one that
    exists). When the drop fails too (the server that broke the creation is still gone), raise a
    StorageError that says so and names the schema to drop, chained to ``failure``."""
    from psycopg import sql

    where = parse_location(location)
    try:
        conn = connect(where, read_only=False, register_vector=False)
        try:
            with server_errors(f"removing the half-made memory at {where.display()}"):
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(where.schema)))
        finally:
            conn.close()
    except RehearsalError as drop_failed:
        if not isinstance(failure, Exception):
            return  # an interrupt stays an interrupt
        raise StorageError(
            f"creating the memory at {where.display()} failed ({failure}) and its half-made schema could not"
            f" be removed ({drop_failed}): drop schema {where.schema!r} (DROP SCHEMA ... CASCADE) before"
            " creating it again"
        ) from failure


def _authenticator(vault: ServerVault | None, manifest: Mapping[str, Any]) -> CatalogAuthenticator:
    # As the embedded store: keyed by the vault's internal data key, else checksums bound to the manifest's
    # store id (a memory without keys cannot tell a deliberate edit from none).
    if vault is not None:
        return CatalogAuthenticator(vault.derive_key("catalog"), vault.store_id)
    return CatalogAuthenticator(None, str(manifest.get("store_id", "")).encode())


def open_server_stores(
    location: str,
    *,
    keys: KeyRing | None,
    dim: int,
    read_only: bool,
    manifest: Mapping[str, Any],
    build_index: bool = True,
) -> ServerStores:
    """The stores of an existing server memory, on one connection, once its commit record, its row count
    and the ``manifest`` it was opened by check out. ``build_index=False`` leaves pgvector's HNSW index
    unbuilt (for a caller that may search another vector index instead)."""
    conn = connect(parse_location(location), read_only=read_only)
    try:
        vault = ServerVault.attach(conn, keys) if keys is not None else None
        records = ServerRecords(conn, dim, _authenticator(vault, manifest))
        commit = records.check_commit(count_rows=True)
        if json.loads(commit.manifest) != json.loads(json.dumps(dict(manifest))):
            raise IntegrityError("the memory's manifest changed while it was being opened")
        if vault is None and records.has_vault():
            # An encrypted memory's manifest edited to say "no keys" would be opened with checksums only.
            raise IntegrityError("the memory holds a vault but its manifest says it is unencrypted")
        if not read_only:
            with server_errors(f"opening {conn.location.display()}"), conn.raw.transaction():
                ensure_touch(conn)  # a memory made before the touched marks gets them
            if commit.rowset is None:
                migrate_to_format3(records)  # a format-2 memory's rows get tags over their vectors
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
