"""Small tests written to kill mutants of the sealing group (``rehearsal/crypto/keys.py``, the vault's
``rehearsal/store/sqlite/texts.py`` and ``vault_db.py``) that survived ``scripts/mutation.py sealing``."""

from __future__ import annotations

import logging
import os
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from rehearsal.crypto.keys import KeyRing
from rehearsal.errors import IntegrityError, MissingKeyError, ReadOnlyError, StoreFormatError, ValidationError
from rehearsal.store.sqlite.texts import Vault


@pytest.fixture
def vault(tmp_path: Path) -> Iterator[Vault]:
    with Vault.create(tmp_path / "v", KeyRing.generate()) as v:
        yield v


# -- keys.py ---------------------------------------------------------------------------------------------


def test_base64_keys_must_be_str_and_valid_base64() -> None:
    with pytest.raises(ValidationError, match=r"^base64 master key must be a str, got bytes$"):
        KeyRing.from_base64(b"AAAA")  # type: ignore[arg-type]
    text = KeyRing.generate().export_base64()
    with pytest.raises(ValidationError, match=r"^master key is not valid base64$"):
        KeyRing.from_base64(text[:20] + "!" + text[20:])  # discarded by a lenient decoder


def test_a_base64_key_wrapped_over_lines_is_read_whole() -> None:
    keys = KeyRing.generate()
    text = keys.export_base64()
    assert KeyRing.from_base64(f"{text[:20]}\n {text[20:]}\n") == keys


def test_a_key_file_that_cannot_be_opened_says_why(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("x")
    path = tmp_path / "plain" / "key"
    with pytest.raises(
        MissingKeyError, match=rf"^key file '{re.escape(str(path))}' cannot be opened: Not a directory$"
    ):
        KeyRing.from_file(path)


def test_only_the_first_4_kib_of_a_key_file_are_read(tmp_path: Path) -> None:
    keys = KeyRing.generate()
    path = tmp_path / "key"
    text = keys.export_base64().encode()
    path.write_bytes(text + b" " * (4096 - len(text)) + b"!")  # byte 4097 would make it invalid
    path.chmod(0o600)
    assert KeyRing.from_file(path) == keys


def test_a_key_ring_is_not_equal_to_other_things() -> None:
    keys = KeyRing.generate()
    assert keys != "key"
    assert keys.__eq__(None) is False


# -- texts.py ------------------------------------------------------------------------------------------


def test_reads_and_seals_accept_repeated_ids(vault: Vault) -> None:
    vault.put([1], ["a"], tenant="acme")
    assert vault.get_present([1, 1]) == {1: "a"}
    blobs = vault.seal_many("acme", [7, 7], [b"x", b"y"], purpose="index")
    assert vault.open_sealed_many("acme", [7, 7], blobs, purpose="index") == [b"x", b"y"]


def test_seal_and_open_refuse_batches_of_other_lengths(vault: Vault) -> None:
    vault.put([1], ["a"], tenant="acme")
    with pytest.raises(ValidationError, match=r"^datas must be a sequence of bytes as long as record_ids$"):
        vault.seal_many("acme", [1, 2], [b"x"], purpose="index")
    blob = vault.seal("acme", 1, b"x", purpose="index")
    with pytest.raises(ValidationError, match=r"^blobs must be a sequence of bytes as long as record_ids$"):
        vault.open_sealed_many("acme", [1, 2], [blob], purpose="index")


def test_delete_removes_more_ids_than_two_statements_bind(vault: Vault) -> None:
    vault.put(list(range(2000)), ["t"] * 2000, tenant="acme")
    assert vault.delete(list(range(2000))) == 2000
    assert len(vault) == 0


def test_rotation_checkpoints_the_wal_logs_and_keeps_the_vault_usable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old, new = KeyRing.generate(), KeyRing.generate()
    path = tmp_path / "v"
    with Vault.create(path, old) as vault:
        vault.put([1], ["a"], tenant="acme")
        with pytest.raises(ValidationError, match=r"^new_keys must be a KeyRing, got str$"):
            vault.rotate_master_key("new")  # type: ignore[arg-type]
        with caplog.at_level(logging.INFO, logger="rehearsal.vault"):
            vault.rotate_master_key(new)
        assert f"master key rotated from {old.fingerprint} to {new.fingerprint} (1 data keys rewrapped)" in (
            caplog.messages
        )
        # The old wrappings must not linger in the WAL file.
        assert os.path.getsize(f"{path}-wal") == 0
        vault.put([2], ["b"], tenant="globex")  # a new data key, wrapped under the new master key
        assert f"keys={new!r}" in repr(vault)
    with Vault.open(path, new) as vault:
        assert vault.get([1, 2]) == ["a", "b"]


def test_shred_logs_the_tenant_and_counts(vault: Vault, caplog: pytest.LogCaptureFixture) -> None:
    vault.put([1, 2], ["a", "b"], tenant="acme")
    with caplog.at_level(logging.INFO, logger="rehearsal.vault"):
        vault.shred("acme")
    assert "shredded tenant 'acme': 2 records, 1 data keys destroyed" in caplog.messages


def test_a_record_whose_data_key_is_gone_is_named(vault: Vault) -> None:
    vault.put([5], ["a"], tenant="acme")
    vault.connection.execute("PRAGMA foreign_keys=OFF")
    vault.connection.execute("DELETE FROM vault_keys")
    vault._data_keys.cache.clear()
    with pytest.raises(Exception, match=r"data key \d+ \(record 5\) is missing from the vault"):
        vault.get([5])


# -- vault_db.py ---------------------------------------------------------------------------------------


def test_a_read_only_vault_cannot_write_even_through_its_connection(tmp_path: Path) -> None:
    keys = KeyRing.generate()
    with Vault.create(tmp_path / "v", keys) as vault:
        vault.put([1], ["a"], tenant="acme")
    with Vault.open(tmp_path / "v", keys, read_only=True) as vault:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            vault.connection.execute("DELETE FROM vault_records")
        assert vault.get([1]) == ["a"]


def test_an_opened_vault_closes_its_connection_and_names_its_path(tmp_path: Path) -> None:
    keys = KeyRing.generate()
    Vault.create(tmp_path / "v", keys).close()
    vault = Vault.open(tmp_path / "v", keys)
    assert repr(vault).startswith(f"Vault(path={str(tmp_path / 'v')!r}, store_id=")
    assert repr(vault).endswith(f"keys={keys!r})")
    vault.close()
    with pytest.raises(sqlite3.ProgrammingError):
        vault.connection.execute("SELECT 1")


def test_an_attached_read_only_vault_refuses_writes(tmp_path: Path) -> None:
    keys = KeyRing.generate()
    conn = sqlite3.connect(tmp_path / "db", isolation_level=None)
    Vault.attach(conn, keys, create=True).put([1], ["a"], tenant="acme")
    reader = Vault.attach(conn, keys, create=False, read_only=True)
    with pytest.raises(ReadOnlyError):
        reader.put([2], ["b"], tenant="acme")
    assert reader.get([1]) == ["a"]


def test_a_checkpoint_blocked_by_a_reader_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    keys = KeyRing.generate()
    with Vault.create(tmp_path / "v", keys) as vault:
        vault.put([1, 2], ["a", "b"], tenant="acme")
        reader = sqlite3.connect(tmp_path / "v", isolation_level=None)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM vault_records").fetchone()  # holds a snapshot
        vault.connection.execute("PRAGMA busy_timeout=50")  # the checkpoint waits this long for it
        with caplog.at_level(logging.WARNING, logger="rehearsal.vault"):
            vault.delete([1])
            vault.checkpoint()
        reader.close()
    assert caplog.messages == [
        "WAL checkpoint was blocked by a reader; deleted records stay in the WAL until the next one"
    ]


def test_a_checkpoint_inside_an_open_transaction_waits(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    keys = KeyRing.generate()
    conn = sqlite3.connect(tmp_path / "db", isolation_level=None)
    vault = Vault.attach(conn, keys, create=True)
    vault.put([1], ["a"], tenant="acme")
    conn.execute("BEGIN IMMEDIATE")
    with caplog.at_level(logging.WARNING, logger="rehearsal.vault"):
        vault.checkpoint()
    conn.execute("COMMIT")
    assert caplog.messages == []
    assert os.path.getsize(tmp_path / "db-wal") > 0


def test_the_repr_of_a_writable_vault_ends_with_its_keys(vault: Vault) -> None:
    assert repr(vault).endswith(f"keys={vault._data_keys.keys!r})")


def test_the_record_aad_layout_is_fixed() -> None:
    # A format promise: data sealed today must open under every later version.
    from rehearsal.crypto.keys import record_aad_prefix

    expected = b"rehearsal/record/v1\x00" + b"s" * 16 + b"\x00\x00\x00\x03" + b"\x04acme" + b"\x04text"
    assert record_aad_prefix(b"s" * 16, "acme", 3, "text") == expected


def test_an_empty_wrapped_key_round_trips() -> None:
    keys = KeyRing.generate()
    blob = keys.wrap(b"", context=b"c")  # format, nonce and tag only: the shortest well-formed blob
    assert keys.unwrap(blob, context=b"c") == b""


def test_errors_of_put_and_reads_name_the_problem(vault: Vault) -> None:
    with pytest.raises(ValidationError, match=r"^tenant must be a str or a sequence of str as long as ids$"):
        vault.put([1, 2], ["a", "b"], tenant=["acme"])
    with pytest.raises(ValidationError, match=r"^record ids must be a sequence of ints, got str$"):
        vault.get("12")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match=r"^record ids must be in \[0, 2\*\*63-1\], got -1$"):
        vault.get([0, -1])
    with pytest.raises(ValidationError, match=rf"^record ids must be in \[0, 2\*\*63-1\], got {2**63}$"):
        vault.get([2**63 - 1, 2**63])
    vault.put([2**63 - 1], ["last"], tenant="acme")
    assert vault.get([2**63 - 1]) == ["last"]


def test_a_record_moved_onto_another_is_named(vault: Vault) -> None:
    vault.put([1, 2], ["a", "b"], tenant="acme")
    sealed = vault.connection.execute("SELECT sealed FROM vault_records WHERE id = 2").fetchone()[0]
    vault.connection.execute("UPDATE vault_records SET sealed = ? WHERE id = 1", (sealed,))
    with pytest.raises(
        IntegrityError,
        match=r"^record 1 failed authentication: its stored bytes were altered or moved from another record "
        "or tenant$",
    ):
        vault.get([1])


def test_the_encryption_limit_per_key_is_an_int_from_1_to_2_to_the_32(tmp_path: Path) -> None:
    keys = KeyRing.generate()
    for n, limit in enumerate((1, 2**32)):
        Vault.create(tmp_path / f"ok{n}", keys, max_encryptions_per_key=limit).close()
    for n, limit in enumerate((0, 2**32 + 1, True, "5")):
        with pytest.raises(ValidationError, match=r"^max_encryptions_per_key must be an int in"):
            Vault.create(tmp_path / f"bad{n}", keys, max_encryptions_per_key=limit)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match=r"^keys must be a KeyRing, got str$"):
        Vault.create(tmp_path / "nokeys", "key")  # type: ignore[arg-type]


def test_attach_checks_its_connection_and_mode(tmp_path: Path) -> None:
    keys = KeyRing.generate()
    with pytest.raises(
        ValidationError, match=r"^the connection must be opened with isolation_level=None \(autocommit\)$"
    ):
        Vault.attach(sqlite3.connect(":memory:"), keys, create=True)
    conn = sqlite3.connect(":memory:", isolation_level=None)
    with pytest.raises(ValidationError, match=r"^a vault cannot be created read-only$"):
        Vault.attach(conn, keys, create=True, read_only=True)
    Vault.attach(conn, keys, create=True)
    with pytest.raises(ValidationError, match=r"^the database already holds a vault$"):
        Vault.attach(conn, keys, create=True)


def test_journal_mode_is_wal_when_writable_and_left_alone_when_read_only(tmp_path: Path) -> None:
    keys = KeyRing.generate()
    with Vault.create(tmp_path / "v", keys) as vault:
        assert vault.connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert len(vault.store_id) == 16
    conn = sqlite3.connect(tmp_path / "v", isolation_level=None)
    conn.execute("PRAGMA journal_mode=DELETE")
    Vault.attach(conn, keys, create=False, read_only=True)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_a_database_without_a_vault_or_with_a_damaged_one_is_named(tmp_path: Path) -> None:
    keys = KeyRing.generate()
    plain = tmp_path / "plain.sqlite"
    sqlite3.connect(plain).close()
    with pytest.raises(StoreFormatError, match=rf"^{re.escape(str(plain))} is not a rehearsal vault$"):
        Vault.open(plain, keys)
    with pytest.raises(StoreFormatError, match=r"^the database is not a rehearsal vault$"):
        Vault.attach(sqlite3.connect(plain, isolation_level=None), keys, create=False)
    Vault.create(tmp_path / "v", keys).close()
    conn = sqlite3.connect(tmp_path / "v", isolation_level=None)
    conn.execute("UPDATE vault_meta SET value = 'x' WHERE name = 'format_version'")
    with pytest.raises(
        StoreFormatError, match=rf"^{re.escape(str(tmp_path / 'v'))} has a damaged vault_meta table$"
    ):
        Vault.open(tmp_path / "v", keys)
    with pytest.raises(StoreFormatError, match=r"^the database has a damaged vault_meta table$"):
        Vault.attach(conn, keys, create=False)


def test_writing_to_a_read_only_vault_is_named(tmp_path: Path) -> None:
    keys = KeyRing.generate()
    Vault.create(tmp_path / "v", keys).close()
    with (
        Vault.open(tmp_path / "v", keys, read_only=True) as vault,
        pytest.raises(ReadOnlyError, match=r"^this vault was opened read-only$"),
    ):
        vault.put([1], ["a"], tenant="acme")


def test_tenant_names_are_checked_with_a_message_that_shows_80_characters() -> None:
    from rehearsal.crypto.keys import validate_tenant

    with pytest.raises(ValidationError, match=r"^tenant must be a str, got int$"):
        validate_tenant(5)
    name = "_" + "x" * 99
    with pytest.raises(ValidationError) as caught:
        validate_tenant(name)
    assert str(caught.value) == (
        f"invalid tenant name {name[:80]!r}: expected 1-64 characters of letters, digits, '.', '_', '-', "
        "starting with a letter or digit"
    )


def test_the_wrapping_key_and_fingerprint_are_hkdf_under_their_labels() -> None:
    # A format promise: data keys wrapped and fingerprints stored today must be read by later versions.
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    master = bytes(range(32))

    def hkdf(info: bytes, length: int) -> bytes:
        return HKDF(hashes.SHA256(), length, salt=None, info=info).derive(master)

    keys = KeyRing.from_bytes(master)
    assert keys.fingerprint == hkdf(b"rehearsal/fingerprint/v1", 8).hex()
    nonce = b"n" * 12
    blob = b"\x01" + nonce + AESGCM(hkdf(b"rehearsal/wrap/v1", 32)).encrypt(nonce, b"k" * 32, b"ctx")
    assert keys.unwrap(blob, context=b"ctx") == b"k" * 32


def test_an_attached_database_that_is_not_sqlite_is_named(tmp_path: Path) -> None:
    path = tmp_path / "junk"
    path.write_bytes(b"not a database at all" * 100)
    with pytest.raises(
        StoreFormatError, match=r"^the database is not a readable SQLite vault: file is not a database$"
    ):
        Vault.attach(sqlite3.connect(path, isolation_level=None), KeyRing.generate(), create=False)


def test_a_keyed_tag_is_the_hmac_of_the_canonical_json_under_the_purposes_key() -> None:
    """Tags already stored in files (versions, deployment config, pending, weights seals, run state) must
    still verify: the canonical form (sorted keys, no spaces) and the purpose's key are pinned here,
    computed independently of ``keyed_tag``."""
    import hashlib
    import hmac

    from rehearsal.crypto.keys import keyed_tag

    keys = KeyRing.from_bytes(bytes(range(32)))
    body = {"b": [1, 2.5, None], "a": {"y": "é", "x": True}}
    canonical = b'{"a":{"x":true,"y":"\\u00e9"},"b":[1,2.5,null]}'
    expected = hmac.new(keys.derive_key("deployment-config"), canonical, hashlib.sha256).hexdigest()
    assert keyed_tag(keys, "deployment-config", body) == expected
    assert keyed_tag(keys, "another-purpose", body) != expected
