"""The rows :class:`~rehearsal.crypto.data_keys.DataKeys` keeps, as the one small protocol it talks to.

Data keys live in the vault's own database (a SQLite file, a PostgreSQL schema), which belongs to the store
layer above this one: the store implements :class:`KeyTable` on the vault's connection and hands it in, so
crypto runs no SQL and names no backend. The tables (laid out in :mod:`rehearsal.store.sqlite.texts`)::

    vault_tenants  id, name
    vault_keys     id, tenant_id, version, wrapped DEK, encryptions made with it
    vault_meta     name -> value; the master-key rows are kek_fingerprint and kek_check

Every call runs on the vault's connection inside whatever transaction the vault has open: the write
transaction for the calls that write, the vault's snapshot for reads that must agree with each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

__all__ = ["KeyRow", "KeyTable", "NewestKey"]

KeyRow = tuple[int, str, int, bytes]
"""(key id, tenant name, version, wrapped data key)."""

NewestKey = tuple[int, int, int, int]
"""(tenant id, key id, version, encryptions made with the key) of a tenant's newest data key."""


class KeyTable(Protocol):
    """The tenants, their wrapped data keys and the vault's meta rows, in the vault's database."""

    def vault_meta(self) -> dict[str, Any]:
        """Every ``vault_meta`` row, name -> value as the database returns it."""
        ...

    def set_vault_meta(self, rows: Sequence[tuple[str, Any]]) -> None:
        """Overwrite the value of each named ``vault_meta`` row (rows that exist already)."""
        ...

    def tenant_id(self, tenant: str) -> int | None:
        """The row id of ``tenant``, or None if it has no row."""
        ...

    def add_tenant(self, tenant_id: int, tenant: str) -> None:
        """A new tenant row."""
        ...

    def newest_key(self, tenant: str) -> NewestKey | None:
        """The tenant's highest key version, or None if the tenant has no key (or no row)."""
        ...

    def key(self, key_id: int) -> tuple[str, int, bytes] | None:
        """(tenant name, version, wrapped data key) of key ``key_id``, or None if there is none."""
        ...

    def find_key(self, tenant_id: int, version: int) -> tuple[int, bytes] | None:
        """(key id, wrapped data key) of the tenant's key ``version``, or None if there is none."""
        ...

    def key_ids(self) -> list[int]:
        """The id of every data key."""
        ...

    def all_keys(self) -> list[KeyRow]:
        """Every data key with its tenant's name."""
        ...

    def add_key(self, key_id: int, tenant_id: int, version: int, wrapped: bytes) -> None:
        """A new data key row, with no encryptions made yet."""
        ...

    def count_encryptions(self, key_id: int, count: int) -> None:
        """Add ``count`` to the encryptions made with key ``key_id``."""
        ...

    def set_wrapped(self, rows: Sequence[tuple[int, bytes]]) -> None:
        """Replace the wrapped form of each (key id, wrapped data key)."""
        ...

    def delete_tenant(self, tenant_id: int) -> list[int]:
        """Delete the tenant's data keys and its row -> the ids of the keys deleted."""
        ...
