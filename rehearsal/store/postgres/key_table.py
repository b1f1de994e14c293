"""The vault's tenants and data keys in the memory's server schema: the
:class:`~rehearsal.crypto.key_table.KeyTable` of :class:`~rehearsal.crypto.data_keys.DataKeys`, on the
memory's :class:`~rehearsal.store.postgres.connection.ServerConnection`.

The same rows as in the SQLite vault (``bytea`` for its blobs). No transactions here: every statement joins
the one the vault has open, so the data keys commit or roll back with the records sealed under them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from rehearsal.crypto.key_table import KeyRow, NewestKey
from rehearsal.store.postgres.connection import ServerConnection

__all__ = ["ServerKeyTable", "meta_value"]


def meta_value(value: Any) -> bytes:
    """A ``vault_meta`` value as its ``bytea`` column keeps it (text such as the fingerprint as UTF-8)."""
    return value if isinstance(value, bytes) else str(value).encode()


class ServerKeyTable:
    """``vault_tenants``, ``vault_keys`` and ``vault_meta`` through the memory's server connection."""

    def __init__(self, conn: ServerConnection) -> None:
        self.conn = conn

    def vault_meta(self) -> dict[str, Any]:
        return dict(self.conn.execute("SELECT name, value FROM vault_meta").fetchall())

    def set_vault_meta(self, rows: Sequence[tuple[str, Any]]) -> None:
        with self.conn.raw.cursor() as cursor:
            cursor.executemany(
                "UPDATE vault_meta SET value = %s WHERE name = %s", [(meta_value(v), k) for k, v in rows]
            )

    def tenant_id(self, tenant: str) -> int | None:
        row = self.conn.execute("SELECT id FROM vault_tenants WHERE name = %s", (tenant,)).fetchone()
        return None if row is None else int(row[0])

    def add_tenant(self, tenant_id: int, tenant: str) -> None:
        self.conn.execute("INSERT INTO vault_tenants (id, name) VALUES (%s, %s)", (tenant_id, tenant))

    def newest_key(self, tenant: str) -> NewestKey | None:
        row = self.conn.execute(
            "SELECT t.id, k.id, k.version, k.encryptions FROM vault_tenants t"
            " JOIN vault_keys k ON k.tenant_id = t.id WHERE t.name = %s ORDER BY k.version DESC LIMIT 1",
            (tenant,),
        ).fetchone()
        return cast("NewestKey | None", row)

    def key(self, key_id: int) -> tuple[str, int, bytes] | None:
        row = self.conn.execute(
            "SELECT t.name, k.version, k.wrapped FROM vault_keys k JOIN vault_tenants t ON t.id = k.tenant_id"
            " WHERE k.id = %s",
            (key_id,),
        ).fetchone()
        return cast("tuple[str, int, bytes] | None", row)

    def find_key(self, tenant_id: int, version: int) -> tuple[int, bytes] | None:
        row = self.conn.execute(
            "SELECT id, wrapped FROM vault_keys WHERE tenant_id = %s AND version = %s", (tenant_id, version)
        ).fetchone()
        return cast("tuple[int, bytes] | None", row)

    def key_ids(self) -> list[int]:
        return [r[0] for r in self.conn.execute("SELECT id FROM vault_keys").fetchall()]

    def all_keys(self) -> list[KeyRow]:
        rows = self.conn.execute(
            "SELECT k.id, t.name, k.version, k.wrapped FROM vault_keys k JOIN vault_tenants t"
            " ON t.id = k.tenant_id"
        ).fetchall()
        return cast("list[KeyRow]", rows)

    def add_key(self, key_id: int, tenant_id: int, version: int, wrapped: bytes) -> None:
        self.conn.execute(
            "INSERT INTO vault_keys (id, tenant_id, version, wrapped, encryptions)"
            " VALUES (%s, %s, %s, %s, 0)",
            (key_id, tenant_id, version, wrapped),
        )

    def count_encryptions(self, key_id: int, count: int) -> None:
        self.conn.execute(
            "UPDATE vault_keys SET encryptions = encryptions + %s WHERE id = %s", (count, key_id)
        )

    def set_wrapped(self, rows: Sequence[tuple[int, bytes]]) -> None:
        with self.conn.raw.cursor() as cursor:
            cursor.executemany("UPDATE vault_keys SET wrapped = %s WHERE id = %s", [(w, k) for k, w in rows])

    def delete_tenant(self, tenant_id: int) -> list[int]:
        conn = self.conn
        rows = conn.execute("SELECT id FROM vault_keys WHERE tenant_id = %s", (tenant_id,)).fetchall()
        key_ids = [r[0] for r in rows]
        conn.execute("DELETE FROM vault_keys WHERE tenant_id = %s", (tenant_id,))
        conn.execute("DELETE FROM vault_tenants WHERE id = %s", (tenant_id,))
        return key_ids
