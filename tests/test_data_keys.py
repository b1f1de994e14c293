"""DataKeys over a KeyTable kept in dicts: the data keys need no database, only the protocol's rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from rehearsal.crypto.data_keys import DataKeys, master_key_meta
from rehearsal.crypto.key_table import KeyRow, NewestKey
from rehearsal.crypto.keys import KeyRing
from rehearsal.errors import IntegrityError, NotFoundError

STORE_ID = bytes(range(16))


class DictKeyTable:
    """The rows of a vault's key tables in memory: tenants by id, keys by id as [tenant_id, version,
    wrapped, encryptions]."""

    def __init__(self, meta: Sequence[tuple[str, Any]]) -> None:
        self.meta = dict(meta)
        self.tenants: dict[int, str] = {}
        self.keys: dict[int, list[Any]] = {}

    def vault_meta(self) -> dict[str, Any]:
        return dict(self.meta)

    def set_vault_meta(self, rows: Sequence[tuple[str, Any]]) -> None:
        self.meta.update(rows)

    def tenant_id(self, tenant: str) -> int | None:
        return next((i for i, name in self.tenants.items() if name == tenant), None)

    def add_tenant(self, tenant_id: int, tenant: str) -> None:
        self.tenants[tenant_id] = tenant

    def newest_key(self, tenant: str) -> NewestKey | None:
        tid = self.tenant_id(tenant)
        mine = [(k, row) for k, row in self.keys.items() if row[0] == tid]
        if not mine:
            return None
        key_id, (tenant_id, version, _, used) = max(mine, key=lambda item: item[1][1])
        return tenant_id, key_id, version, used

    def key(self, key_id: int) -> tuple[str, int, bytes] | None:
        row = self.keys.get(key_id)
        return None if row is None else (self.tenants[row[0]], row[1], row[2])

    def find_key(self, tenant_id: int, version: int) -> tuple[int, bytes] | None:
        found = [(k, row[2]) for k, row in self.keys.items() if row[:2] == [tenant_id, version]]
        return found[0] if found else None

    def key_ids(self) -> list[int]:
        return list(self.keys)

    def all_keys(self) -> list[KeyRow]:
        return [(k, self.tenants[row[0]], row[1], row[2]) for k, row in self.keys.items()]

    def add_key(self, key_id: int, tenant_id: int, version: int, wrapped: bytes) -> None:
        self.keys[key_id] = [tenant_id, version, wrapped, 0]

    def count_encryptions(self, key_id: int, count: int) -> None:
        self.keys[key_id][3] += count

    def set_wrapped(self, rows: Sequence[tuple[int, bytes]]) -> None:
        for key_id, wrapped in rows:
            self.keys[key_id][2] = wrapped

    def delete_tenant(self, tenant_id: int) -> list[int]:
        gone = [k for k, row in self.keys.items() if row[0] == tenant_id]
        for key_id in gone:
            del self.keys[key_id]
        del self.tenants[tenant_id]
        return gone


def _data_keys(keys: KeyRing, *, limit: int = 2**30) -> tuple[DataKeys, DictKeyTable]:
    table = DictKeyTable(master_key_meta(keys, STORE_ID))
    return DataKeys(table, keys, store_id=STORE_ID, max_encryptions_per_key=limit), table


def test_a_tenant_rolls_to_a_new_key_version_at_the_limit(keys: KeyRing) -> None:
    data_keys, table = _data_keys(keys, limit=2)
    sealed = data_keys.seal_batch("acme", [1, 2, 3, 4, 5], [b"x"] * 5, "vector")
    assert [version for _, version, _ in sealed] == [1, 1, 2, 2, 3]
    assert sorted((row[1], row[3]) for row in table.keys.values()) == [(1, 2), (2, 2), (3, 1)]


def test_rewrapped_keys_still_open_what_was_sealed(keys: KeyRing) -> None:
    data_keys, table = _data_keys(keys)
    blobs = data_keys.seal_blobs("acme", [7, 8], [b"seven", b"eight"], "vector")
    new_keys = KeyRing.generate()
    assert data_keys.rewrap_all(new_keys) == 1
    assert table.meta["kek_fingerprint"] == new_keys.fingerprint
    reopened = DataKeys(table, new_keys, store_id=STORE_ID, max_encryptions_per_key=2**30)
    assert reopened.open_blobs("acme", [7, 8], blobs, "vector") == [b"seven", b"eight"]


def test_a_destroyed_tenant_opens_nothing(keys: KeyRing) -> None:
    data_keys, _ = _data_keys(keys)
    blobs = data_keys.seal_blobs("acme", [7], [b"seven"], "vector")
    tenant_id = data_keys.tenant_id("acme")
    assert tenant_id is not None
    assert data_keys.destroy_tenant(tenant_id) == 1
    assert data_keys.cache == {}
    with pytest.raises(NotFoundError, match="tenant 'acme' has no data key"):
        data_keys.open_blobs("acme", [7], blobs, "vector")


def test_a_missing_data_key_is_an_integrity_error(keys: KeyRing) -> None:
    data_keys, _ = _data_keys(keys)
    with pytest.raises(IntegrityError, match=r"data key 42 \(record 7\) is missing from the vault"):
        data_keys.load(42, 7)


@pytest.mark.parametrize("stored", [str, bytes])
def test_a_wrong_master_key_names_the_recorded_fingerprint_as_text(stored: type) -> None:
    """A server keeps the fingerprint as bytes: the message shows it as the text it is, not b'...'."""
    from rehearsal.crypto.data_keys import check_master_key
    from rehearsal.errors import WrongKeyError

    sealing = KeyRing.generate()
    meta = dict(master_key_meta(sealing, STORE_ID))
    if stored is bytes:
        meta["kek_fingerprint"] = str(meta["kek_fingerprint"]).encode("ascii")
    check_master_key(sealing, STORE_ID, meta)  # the sealing key opens it
    with pytest.raises(WrongKeyError) as refused:
        check_master_key(KeyRing.generate(), STORE_ID, meta)
    assert f"sealed with master key {sealing.fingerprint})" in str(refused.value)
    assert "b'" not in str(refused.value)
