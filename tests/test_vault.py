from __future__ import annotations

import base64
import logging
import random
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from rehearsal.crypto.keys import KeyRing
from rehearsal.errors import (
    IntegrityError,
    NotFoundError,
    ReadOnlyError,
    StoreFormatError,
    ValidationError,
    WrongKeyError,
)
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.store.sqlite.texts import Vault

TEXTS = [
    "hello",
    "héllo wörld",
    "日本語のテキスト",
    "emoji 🎉🧪",
    "שלום עולם",
    "e\u0301 combining",
    "tab\tnl\n",
]


@pytest.fixture
def keys() -> KeyRing:
    return KeyRing.generate()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "vault.db"


@pytest.fixture
def vault(path: Path, keys: KeyRing) -> Iterator[Vault]:
    with Vault.create(path, keys) as v:
        v.put([1, 2, 3], ["alpha", "beta", "gamma"], tenant="acme")
        v.put([10, 11], ["delta", "epsilon"], tenant="globex")
        yield v


def contents(v: Vault) -> tuple[int, dict[int, str], list[str]]:
    return len(v), dict(zip(v.ids(), v.get(v.ids()), strict=True)), v.tenants()


@contextmanager
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    """A separate plain connection, as an attacker with file access would use."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


def sealed_of(path: Path, record_id: int) -> bytes:
    with raw(path) as conn:
        row = conn.execute("SELECT sealed FROM vault_records WHERE id = ?", (record_id,)).fetchone()
    return bytes(row[0])


def flip(blob: bytes, pos: int) -> bytes:
    return blob[:pos] + bytes([blob[pos] ^ 0x01]) + blob[pos + 1 :]


# -- round trips ----------------------------------------------------------------------------------------


def test_round_trip_of_10k_records_with_non_ascii_and_a_1mb_text(path: Path, keys: KeyRing) -> None:
    rng = random.Random(0)
    texts = [f"{i}: {TEXTS[i % len(TEXTS)]} " + "x" * rng.randrange(0, 300) for i in range(10_000)]
    big = ("ünïcødé 1MB " * 90_000)[:1_000_000]
    with Vault.create(path, keys) as v:
        v.put(list(range(10_000)), texts, tenant=[f"t{i % 3}" for i in range(10_000)])
        v.put([20_000], [big], tenant="big")
    order = list(range(10_000))
    rng.shuffle(order)
    with Vault.open(path, keys, read_only=True) as v:
        assert v.get(order) == [texts[i] for i in order]
        assert v.get([20_000]) == [big]
        assert len(v) == 10_001
        assert v.verify() == 10_001


def test_empty_string_is_stored_faithfully(vault: Vault) -> None:
    vault.put([50, 51], ["", " "], tenant="acme")
    assert vault.get([50, 51]) == ["", " "]


def test_get_returns_duplicates_in_request_order(vault: Vault) -> None:
    assert vault.get([3, 1, 3]) == ["gamma", "alpha", "gamma"]


def test_numpy_style_integer_ids_are_accepted(vault: Vault) -> None:
    class Index:  # stands in for numpy.int64: an int-like with __index__
        def __init__(self, v: int) -> None:
            self.v = v

        def __index__(self) -> int:
            return self.v

    assert vault.get([Index(2)]) == ["beta"]  # type: ignore[list-item]


def test_get_unknown_id_names_the_missing_ids(vault: Vault) -> None:
    with pytest.raises(NotFoundError, match=r"2 record ids not in the vault: \[7, 99\]"):
        vault.get([1, 99, 7])


def test_get_present_skips_missing_ids(vault: Vault) -> None:
    assert vault.get_present([1, 99, 10]) == {1: "alpha", 10: "delta"}


def test_inspection_lists_tenants_owners_and_ids(vault: Vault) -> None:
    assert vault.tenants() == ["acme", "globex"]
    assert vault.tenant_of([1, 11]) == {1: "acme", 11: "globex"}
    assert vault.ids() == [1, 2, 3, 10, 11]
    assert vault.ids(tenant="globex") == [10, 11]
    with pytest.raises(NotFoundError, match=r"record ids not in the vault: \[5\]"):
        vault.tenant_of([5])


def test_delete_removes_records(vault: Vault) -> None:
    assert vault.delete([1, 10]) == 2
    assert vault.ids() == [2, 3, 11]


def test_delete_unknown_id_removes_nothing(vault: Vault) -> None:
    before = contents(vault)
    with pytest.raises(NotFoundError, match=r"not in the vault: \[42\]"):
        vault.delete([1, 42])
    assert contents(vault) == before


# -- bad input leaves the vault unchanged ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("ids", "texts", "tenant", "match"),
    [
        ([5], [b"bytes"], "acme", r"texts\[0\] must be a str, got bytes"),
        ([5, 6], ["ok", None], "acme", r"texts\[1\] must be a str, got NoneType"),
        ([5], ["\ud800"], "acme", r"texts\[0\] \(record 5\) is not valid Unicode"),
        ([5], ["x"], "bad tenant", "invalid tenant name 'bad tenant'"),
        ([5], ["x"], None, "tenant must be a str or a sequence"),
        ([5, 6], ["x", "y"], ["acme"], "tenant must be a str or a sequence of str as long as ids"),
        ([5], ["x"], "_system", "invalid tenant name '_system'"),
        ([5, 5], ["x", "y"], "acme", r"duplicate record ids in one call: \[5\]"),
        ([5, 2], ["x", "y"], "acme", r"record ids already exist: \[2\]"),
        ([5, 6], ["x"], "acme", "got 2 ids but 1 texts"),
        ([-1], ["x"], "acme", r"must be in \[0, 2\*\*63-1\], got -1"),
        ([True], ["x"], "acme", "must be ints, got bool at position 0"),
        ([1.0], ["x"], "acme", "must be ints, got float at position 0"),
        (None, ["x"], "acme", "must be a sequence of ints, got NoneType"),
        ([5], "x", "acme", "texts must be a sequence of str, got str"),
    ],
)
def test_bad_put_raises_typed_error_and_changes_nothing(
    vault: Vault, ids: Any, texts: Any, tenant: Any, match: str
) -> None:
    before = contents(vault)
    with pytest.raises(ValidationError, match=match):
        vault.put(ids, texts, tenant=tenant)
    assert contents(vault) == before


def test_duplicate_ids_in_delete_are_rejected(vault: Vault) -> None:
    before = contents(vault)
    with pytest.raises(ValidationError, match=r"duplicate record ids in one call: \[1\]"):
        vault.delete([1, 1])
    assert contents(vault) == before


def test_empty_batches_are_no_ops(vault: Vault) -> None:
    before = contents(vault)
    vault.put([], [], tenant="acme")
    assert vault.get([]) == []
    assert vault.delete([]) == 0
    assert contents(vault) == before


# -- keys -------------------------------------------------------------------------------------------------


def test_wrong_master_key_is_refused_at_open(vault: Vault, path: Path) -> None:
    vault.close()
    with pytest.raises(WrongKeyError, match="does not open this vault"):
        Vault.open(path, KeyRing.generate())


def test_rotation_makes_every_record_readable_with_new_key_only(
    vault: Vault, path: Path, keys: KeyRing
) -> None:
    sealed_before = sealed_of(path, 1)
    new = KeyRing.generate()
    vault.rotate_master_key(new)
    assert sealed_of(path, 1) == sealed_before  # records are not re-encrypted
    expected = contents(vault)
    vault.close()
    with Vault.open(path, new) as reopened:
        assert contents(reopened) == expected
        assert reopened.verify() == 5
    with pytest.raises(WrongKeyError, match=f"master key {keys.fingerprint} does not open"):
        Vault.open(path, keys)


def test_nonce_budget_rolls_to_new_key_versions_that_stay_readable(path: Path, keys: KeyRing) -> None:
    with Vault.create(path, keys, max_encryptions_per_key=5) as v:
        v.put(list(range(12)), [f"r{i}" for i in range(12)], tenant="acme")
    with Vault.open(path, keys, max_encryptions_per_key=5) as v:  # the counts are persisted, not in memory
        v.put(list(range(12, 16)), [f"r{i}" for i in range(12, 16)], tenant="acme")
        counts = v.connection.execute(
            "SELECT version, encryptions FROM vault_keys ORDER BY version"
        ).fetchall()
        assert counts == [(1, 5), (2, 5), (3, 5), (4, 1)]
        assert v.get(list(range(16))) == [f"r{i}" for i in range(16)]


def test_max_encryptions_per_key_must_be_positive(path: Path, keys: KeyRing) -> None:
    with pytest.raises(
        ValidationError, match=r"max_encryptions_per_key must be an int in \[1, 2\*\*32\], got 0"
    ):
        Vault.create(path, keys, max_encryptions_per_key=0)
    assert not path.exists()


# -- tampering --------------------------------------------------------------------------------------------


def test_flipped_byte_in_the_database_file_names_the_record(vault: Vault, path: Path, keys: KeyRing) -> None:
    vault.put([7], ["a record worth tampering with"], tenant="acme")
    blob = sealed_of(path, 7)
    vault.close()  # the last connection checkpoints the WAL into the main file
    data = path.read_bytes()
    assert data.count(blob) == 1
    at = data.index(blob) + 20  # inside the ciphertext
    path.write_bytes(data[:at] + bytes([data[at] ^ 0x40]) + data[at + 1 :])
    with Vault.open(path, keys) as v:
        assert v.get([1]) == ["alpha"]
        with pytest.raises(IntegrityError, match="record 7 failed authentication"):
            v.get([7])
        with pytest.raises(IntegrityError, match="record 7 failed authentication"):
            v.verify()


def test_any_single_flipped_byte_of_nonce_ciphertext_or_tag_is_detected(vault: Vault, path: Path) -> None:
    blob = sealed_of(path, 2)  # nonce (12) || ciphertext (4) || tag (16)
    with raw(path) as conn:
        for pos in range(len(blob)):
            conn.execute("UPDATE vault_records SET sealed = ? WHERE id = 2", (flip(blob, pos),))
            with pytest.raises(IntegrityError, match="record 2 failed authentication"):
                vault.get([2])
        conn.execute("UPDATE vault_records SET sealed = ? WHERE id = 2", (blob[:-1],))
        with pytest.raises(IntegrityError, match="record 2 failed authentication"):
            vault.get([2])
        conn.execute("UPDATE vault_records SET sealed = ? WHERE id = 2", (blob,))
    assert vault.get([2]) == ["beta"]


def test_swapped_ciphertexts_are_detected(vault: Vault, path: Path) -> None:
    a, b = sealed_of(path, 1), sealed_of(path, 2)
    with raw(path) as conn:
        conn.executemany("UPDATE vault_records SET sealed = ? WHERE id = ?", [(b, 1), (a, 2)])
    with pytest.raises(IntegrityError, match="record 1 failed authentication"):
        vault.get([1])
    with pytest.raises(IntegrityError, match="record 2 failed authentication"):
        vault.get([2])


def test_record_moved_to_another_tenant_is_detected(vault: Vault, path: Path) -> None:
    with raw(path) as conn:
        conn.execute(
            "UPDATE vault_records SET key_id = (SELECT key_id FROM vault_records WHERE id = 10) WHERE id = 1"
        )
    with pytest.raises(IntegrityError, match="record 1 failed authentication"):
        vault.get([1])


def test_wrapped_key_moved_to_another_tenant_is_detected(vault: Vault, path: Path, keys: KeyRing) -> None:
    vault.close()
    with raw(path) as conn:
        conn.execute(
            "UPDATE vault_keys SET wrapped = (SELECT k.wrapped FROM vault_keys k JOIN vault_tenants t"
            " ON t.id = k.tenant_id WHERE t.name = 'acme') WHERE tenant_id ="
            " (SELECT id FROM vault_tenants WHERE name = 'globex')"
        )
    with Vault.open(path, keys) as v, pytest.raises(IntegrityError, match="tenant 'globex' version 1"):
        v.get([10])


# -- shredding --------------------------------------------------------------------------------------------


def test_shred_removes_rows_and_key_and_keeps_other_tenants(vault: Vault) -> None:
    assert vault.shred("acme") == 3
    assert vault.tenants() == ["globex"]
    assert vault.ids() == [10, 11]
    assert vault.get([10, 11]) == ["delta", "epsilon"]
    with pytest.raises(NotFoundError, match=r"not in the vault: \[1, 2, 3\]"):
        vault.get([1, 2, 3])
    n_keys = vault.connection.execute("SELECT count(*) FROM vault_keys").fetchone()[0]
    assert n_keys == 1
    assert vault.verify() == 2


def recover_data_key(data: bytes, keys: KeyRing, context: bytes) -> bytes | None:
    """Try to unwrap a data key at every offset of ``data`` that starts like a wrapped key (61 bytes)."""
    at = data.find(b"\x01")
    while at != -1:
        try:
            return keys.unwrap(data[at : at + 61], context=context)
        except WrongKeyError:
            at = data.find(b"\x01", at + 1)
    return None


def test_shredded_text_is_unrecoverable_from_the_raw_files(path: Path, keys: KeyRing) -> None:
    secret = "patient 4711 diagnosis: confidential"
    with Vault.create(path, keys) as v:
        v.put(list(range(200)), [f"{secret} #{i}" for i in range(200)], tenant="victim")
        v.put(list(range(200, 400)), [f"kept #{i}" for i in range(200)], tenant="other")
        with raw(path) as conn:
            sql = (
                "SELECT wrapped FROM vault_keys k JOIN vault_tenants t ON t.id = k.tenant_id WHERE t.name = ?"
            )
            wrapped = conn.execute(sql, ("victim",)).fetchone()[0]
        sealed = [sealed_of(path, i) for i in range(0, 200, 20)]
        # What the vault binds a wrapped key to; an attacker can read all of it from the file.
        context = b"rehearsal/dek/v1" + v.store_id + (1).to_bytes(4, "big") + b"victim"

        def disk() -> bytes:
            wal = Path(f"{path}-wal")
            return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")

        before = disk()
        # Positive controls: the searches below can find what they look for.
        assert wrapped in before
        assert any(s in before for s in sealed)
        assert recover_data_key(before, keys, context) is not None
        v.shred("victim")
        after = disk()  # read while the vault is still open
        assert recover_data_key(after, keys, context) is None  # holding the old KEK does not help
        assert wrapped not in after
        assert not any(s in after for s in sealed)
        assert secret.encode() not in after
        assert v.get([200]) == ["kept #0"]


def test_shred_unknown_tenant_is_not_found(vault: Vault) -> None:
    with pytest.raises(NotFoundError, match="tenant 'initech' has no data"):
        vault.shred("initech")


def test_shred_refuses_the_reserved_system_tenant(vault: Vault) -> None:
    vault.seal("_system", 0, b"index", purpose="index")
    with pytest.raises(ValidationError, match="'_system' is reserved"):
        vault.shred("_system")


# -- sealing other data ----------------------------------------------------------------------------------


def test_seal_round_trip_and_bindings(vault: Vault) -> None:
    blob = vault.seal("acme", 1, b"\x00vector bytes", purpose="vector")
    assert vault.open_sealed("acme", 1, blob, purpose="vector") == b"\x00vector bytes"
    with pytest.raises(IntegrityError, match="record 2 failed authentication"):
        vault.open_sealed("acme", 2, blob, purpose="vector")
    with pytest.raises(IntegrityError, match="record 1 failed authentication"):
        vault.open_sealed("acme", 1, blob, purpose="other")
    with pytest.raises(IntegrityError, match="record 1 failed authentication"):
        vault.open_sealed("globex", 1, blob, purpose="vector")
    with pytest.raises(IntegrityError, match="record 1 names unknown key version 9"):
        vault.open_sealed("acme", 1, blob[:1] + (9).to_bytes(4, "big") + blob[5:], purpose="vector")
    with pytest.raises(IntegrityError, match="record 1 is malformed"):
        vault.open_sealed("acme", 1, blob[:20], purpose="vector")
    with pytest.raises(IntegrityError, match="record 1 failed authentication"):
        vault.open_sealed("acme", 1, flip(blob, len(blob) - 1), purpose="vector")


def test_seal_many_and_system_tenant(vault: Vault) -> None:
    blobs = vault.seal_many("_system", [0, 1], [b"a", b""], purpose="index")
    assert vault.open_sealed_many("_system", [0, 1], blobs, purpose="index") == [b"a", b""]
    assert "_system" not in vault.tenants()


def test_seal_rejects_reserved_purpose_and_bad_data(vault: Vault) -> None:
    with pytest.raises(ValidationError, match="purpose 'text' is reserved"):
        vault.seal("acme", 1, b"x", purpose="text")
    with pytest.raises(ValidationError, match=r"datas\[0\] must be bytes, got str"):
        vault.seal("acme", 1, "x", purpose="vector")  # type: ignore[arg-type]


def test_open_sealed_for_a_shredded_tenant_is_not_found(vault: Vault) -> None:
    blob = vault.seal("acme", 1, b"x", purpose="vector")
    vault.shred("acme")
    with pytest.raises(NotFoundError, match="tenant 'acme' has no data key"):
        vault.open_sealed("acme", 1, blob, purpose="vector")


# -- opening, modes, transactions -------------------------------------------------------------------------


def test_read_only_vault_refuses_every_mutation(vault: Vault, path: Path, keys: KeyRing) -> None:
    vault.close()
    with Vault.open(path, keys, read_only=True) as v:
        assert v.get([1]) == ["alpha"]
        calls = [
            lambda: v.put([9], ["x"], tenant="acme"),
            lambda: v.delete([1]),
            lambda: v.shred("acme"),
            lambda: v.rotate_master_key(KeyRing.generate()),
            lambda: v.seal("acme", 1, b"x", purpose="vector"),
        ]
        for call in calls:
            with pytest.raises(ReadOnlyError, match="opened read-only"):
                call()
        assert len(v) == 5


def test_create_refuses_an_existing_path(vault: Vault, path: Path, keys: KeyRing) -> None:
    with pytest.raises(ValidationError, match="already exists"):
        Vault.create(path, keys)


def test_create_under_a_missing_folder_is_not_found(tmp_path: Path, keys: KeyRing) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        Vault.create(tmp_path / "absent" / "v.db", keys)
    assert not (tmp_path / "absent").exists()


def test_memory_create_makes_missing_parent_folders(tmp_path: Path, keys: KeyRing) -> None:
    with RehearsalMemory.create(tmp_path / "a" / "b" / "mem", keys=keys, dim=4, encoder_name="x") as mem:
        assert len(mem) == 0


def test_open_missing_path_is_not_found(tmp_path: Path, keys: KeyRing) -> None:
    with pytest.raises(NotFoundError, match="no vault at"):
        Vault.open(tmp_path / "absent.db", keys)


def test_open_a_file_that_is_not_a_vault_is_store_format_error(tmp_path: Path, keys: KeyRing) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"definitely not sqlite" * 100)
    with pytest.raises(StoreFormatError, match="not a readable SQLite vault"):
        Vault.open(junk, keys)
    other = tmp_path / "other.db"
    with raw(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    with pytest.raises(StoreFormatError, match="is not a rehearsal vault"):
        Vault.open(other, keys)


def test_open_a_newer_format_is_store_format_error(vault: Vault, path: Path, keys: KeyRing) -> None:
    vault.close()
    with raw(path) as conn:
        conn.execute("UPDATE vault_meta SET value = 99 WHERE name = 'format_version'")
    with pytest.raises(StoreFormatError, match="format version 99 is newer"):
        Vault.open(path, keys)


def test_attached_vault_shares_the_callers_transaction(tmp_path: Path, keys: KeyRing) -> None:
    conn = sqlite3.connect(tmp_path / "memory.db", isolation_level=None)
    conn.execute("CREATE TABLE vectors (id INTEGER PRIMARY KEY)")
    v = Vault.attach(conn, keys, create=True)

    def failing_write() -> None:
        with v.transaction():
            v.put([1], ["one"], tenant="acme")
            conn.execute("INSERT INTO vectors VALUES (1)")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        failing_write()
    assert len(v) == 0
    assert conn.execute("SELECT count(*) FROM vectors").fetchone()[0] == 0
    with v.transaction():
        v.put([1], ["one"], tenant="acme")
        with pytest.raises(ValidationError, match="already exist"):
            v.put([2, 1], ["two", "again"], tenant="acme")  # undoes only itself
        conn.execute("INSERT INTO vectors VALUES (1)")
    assert v.get([1]) == ["one"]
    assert len(v) == 1
    v.close()
    assert conn.execute("SELECT count(*) FROM vectors").fetchone()[0] == 1  # still open: owned by the caller
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert names - {"vectors"} == {"vault_meta", "vault_tenants", "vault_keys", "vault_records"}
    assert Vault.attach(conn, keys, create=False).get([1]) == ["one"]


def test_attach_requires_an_autocommit_connection(tmp_path: Path, keys: KeyRing) -> None:
    conn = sqlite3.connect(tmp_path / "m.db")
    with pytest.raises(ValidationError, match="isolation_level=None"):
        Vault.attach(conn, keys, create=True)


# -- secrets stay secret ---------------------------------------------------------------------------------


def test_repr_and_str_never_show_key_bytes(vault: Vault, keys: KeyRing) -> None:
    for text in (repr(vault), str(vault)):
        assert "key=<redacted>" in text
        assert keys.export_base64() not in text


def test_logs_and_error_messages_do_not_contain_key_material(
    path: Path, keys: KeyRing, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    messages = []
    with Vault.create(path, keys, max_encryptions_per_key=2) as v:
        v.put([1, 2, 3], ["a", "b", "c"], tenant="acme")
        new = KeyRing.generate()
        v.rotate_master_key(new)
        v.shred("acme")
        for bad in (lambda: v.get([1]), lambda: v.shred("acme"), lambda: Vault.open(path, keys)):
            with pytest.raises(Exception) as info:  # noqa: PT011 (any error: only its text matters here)
                bad()
            messages.append(str(info.value))
    messages += [r.getMessage() for r in caplog.records]
    assert any("rolled to data key version 2" in m for m in messages)  # logging did happen
    text = "\n".join(messages)
    for k in (keys, new):
        raw_key = base64.b64decode(k.export_base64())
        assert len(raw_key) == 32
        # The 32 raw bytes, whichever way a message could have carried them, and their text encodings.
        assert raw_key not in text.encode("utf-8", "surrogateescape")
        assert raw_key.decode("latin-1") not in text
        for form in (
            k.export_base64(),
            base64.urlsafe_b64encode(raw_key).decode(),
            raw_key.hex(),
            raw_key.hex().upper(),
            repr(raw_key),
        ):
            assert form not in text
