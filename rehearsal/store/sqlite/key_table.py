"""The vault's tenants and data keys in its SQLite database: the :class:`~rehearsal.crypto.key_table.KeyTable`
of :class:`~rehearsal.crypto.data_keys.DataKeys`, on the vault's own connection.

No transactions here: every statement joins the one the vault has open (``BEGIN IMMEDIATE`` for writes,
``BEGIN`` for a snapshot), so the data keys commit or roll back with the records sealed under them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, cast

from rehearsal.crypto.key_table import KeyRow, NewestKey

__all__ = ["SqliteKeyTable"]


class SqliteKeyTable:
    """``vault_tenants``, ``vault_keys`` and ``vault_meta`` through the vault's connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.connection = conn

    def vault_meta(self) -> dict[str, Any]:
        return dict(self.connection.execute("SELECT name, value FROM vault_meta").fetchall())

    def set_vault_meta(self, rows: Sequence[tuple[str, Any]]) -> None:
        self.connection.executemany(
            "UPDATE vault_meta SET value = ? WHERE name = ?", [(v, k) for k, v in rows]
        )

    def tenant_id(self, tenant: str) -> int | None:
        row = self.connection.execute("SELECT id FROM vault_tenants WHERE name = ?", (tenant,)).fetchone()
        return None if row is None else int(row[0])

    def add_tenant(self, tenant_id: int, tenant: str) -> None:
        self.connection.execute("INSERT INTO vault_tenants (id, name) VALUES (?, ?)", (tenant_id, tenant))

    def newest_key(self, tenant: str) -> NewestKey | None:
        row = self.connection.execute(
            "SELECT t.id, k.id, k.version, k.encryptions FROM vault_tenants t"
            " JOIN vault_keys k ON k.tenant_id = t.id WHERE t.name = ? ORDER BY k.version DESC LIMIT 1",
            (tenant,),
        ).fetchone()
        return cast("NewestKey | None", row)

    def key(self, key_id: int) -> tuple[str, int, bytes] | None:
        row = self.connection.execute(
            "SELECT t.name, k.version, k.wrapped FROM vault_keys k JOIN vault_tenants t ON t.id = k.tenant_id"
            " WHERE k.id = ?",
            (key_id,),
        ).fetchone()
        return cast("tuple[str, int, bytes] | None", row)

    def find_key(self, tenant_id: int, version: int) -> tuple[int, bytes] | None:
        row = self.connection.execute(
            "SELECT id, wrapped FROM vault_keys WHERE tenant_id = ? AND version = ?", (tenant_id, version)
        ).fetchone()
        return cast("tuple[int, bytes] | None", row)

    def key_ids(self) -> list[int]:
        return [r[0] for r in self.connection.execute("SELECT id FROM vault_keys").fetchall()]

    def all_keys(self) -> list[KeyRow]:
        rows = self.connection.execute(
            "SELECT k.id, t.name, k.version, k.wrapped FROM vault_keys k JOIN vault_tenants t"
            " ON t.id = k.tenant_id"
        ).fetchall()
        return cast("list[KeyRow]", rows)

    def add_key(self, key_id: int, tenant_id: int, version: int, wrapped: bytes) -> None:
        self.connection.execute(
            "INSERT INTO vault_keys (id, tenant_id, version, wrapped, encryptions) VALUES (?, ?, ?, ?, 0)",
            (key_id, tenant_id, version, wrapped),
        )

    def count_encryptions(self, key_id: int, count: int) -> None:
        self.connection.execute(
            "UPDATE vault_keys SET encryptions = encryptions + ? WHERE id = ?", (count, key_id)
        )

    def set_wrapped(self, rows: Sequence[tuple[int, bytes]]) -> None:
        self.connection.executemany(
            "UPDATE vault_keys SET wrapped = ? WHERE id = ?", [(w, k) for k, w in rows]
        )

    def delete_tenant(self, tenant_id: int) -> list[int]:
        conn = self.connection
        key_ids = [r[0] for r in conn.execute("SELECT id FROM vault_keys WHERE tenant_id = ?", (tenant_id,))]
        conn.execute("DELETE FROM vault_keys WHERE tenant_id = ?", (tenant_id,))
        conn.execute("DELETE FROM vault_tenants WHERE id = ?", (tenant_id,))
        return key_ids
