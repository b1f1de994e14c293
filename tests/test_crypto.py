from __future__ import annotations

import base64
import os
import pickle
from pathlib import Path

import pytest

from rehearsal.crypto.keys import TENANT_PATTERN, KeyRing, record_aad, validate_tenant
from rehearsal.errors import KeyManagementError, MissingKeyError, ValidationError, WrongKeyError

RAW = bytes(range(32))


def test_generate_gives_distinct_32_byte_keys() -> None:
    a, b = KeyRing.generate(), KeyRing.generate()
    assert len(base64.b64decode(a.export_base64())) == 32
    assert a.fingerprint != b.fingerprint


def test_from_bytes_requires_exactly_32_bytes() -> None:
    assert KeyRing.from_bytes(RAW).export_base64() == base64.b64encode(RAW).decode()
    with pytest.raises(ValidationError, match="exactly 32 bytes, got 31"):
        KeyRing.from_bytes(RAW[:31])
    with pytest.raises(ValidationError, match="must be bytes, got str"):
        KeyRing.from_bytes("x" * 32)  # type: ignore[arg-type]


def test_from_base64_round_trips_and_ignores_whitespace() -> None:
    text = base64.b64encode(RAW).decode()
    assert KeyRing.from_base64(f"  {text}\n").fingerprint == KeyRing.from_bytes(RAW).fingerprint


def test_from_base64_rejects_garbage_without_echoing_it() -> None:
    with pytest.raises(ValidationError, match="not valid base64") as info:
        KeyRing.from_base64("secret-not-base64!!")
    assert "secret" not in str(info.value)
    with pytest.raises(ValidationError, match="decode to 32 bytes, got 16"):
        KeyRing.from_base64(base64.b64encode(RAW[:16]).decode())


def test_from_env_reads_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REHEARSAL_MASTER_KEY", base64.b64encode(RAW).decode())
    assert KeyRing.from_env() == KeyRing.from_bytes(RAW)


@pytest.mark.parametrize("value", [None, "", "   "])
def test_from_env_unset_or_empty_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("MY_KEY_VAR", raising=False)
    else:
        monkeypatch.setenv("MY_KEY_VAR", value)
    with pytest.raises(MissingKeyError, match="MY_KEY_VAR is unset or empty"):
        KeyRing.from_env("MY_KEY_VAR")


def test_from_env_invalid_value_names_variable_not_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_KEY_VAR", "hunter2hunter2")
    with pytest.raises(ValidationError, match="MY_KEY_VAR") as info:
        KeyRing.from_env("MY_KEY_VAR")
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize("content", [RAW, base64.b64encode(RAW) + b"\n"])
def test_from_file_accepts_raw_or_base64(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "master.key"
    path.write_bytes(content)
    path.chmod(0o600)
    assert KeyRing.from_file(path) == KeyRing.from_bytes(RAW)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644])
def test_from_file_refuses_group_or_world_access(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "master.key"
    path.write_bytes(RAW)
    path.chmod(mode)
    with pytest.raises(ValidationError, match=f"master.key' has mode {mode:04o}"):
        KeyRing.from_file(path)


def test_from_file_missing_is_missing_key_error(tmp_path: Path) -> None:
    with pytest.raises(MissingKeyError, match=r"nope\.key' does not exist"):
        KeyRing.from_file(tmp_path / "nope.key")


def test_from_file_with_bad_content_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    path.write_bytes(b"not a key at all")
    path.chmod(0o400)
    with pytest.raises(ValidationError, match="holds neither 32 raw bytes nor base64"):
        KeyRing.from_file(path)


def test_from_provider_calls_the_provider_once() -> None:
    calls = []

    def provider() -> bytes:
        calls.append(1)
        return RAW

    keys = KeyRing.from_provider(provider)
    keys.wrap(b"k" * 32, context=b"c")
    assert keys == KeyRing.from_bytes(RAW)
    assert calls == [1]


def test_from_provider_failure_is_missing_key_error() -> None:
    def provider() -> bytes:
        raise ConnectionError("kms down")

    with pytest.raises(MissingKeyError, match="failed: ConnectionError"):
        KeyRing.from_provider(provider)
    with pytest.raises(ValidationError, match="exactly 32 bytes"):
        KeyRing.from_provider(lambda: b"short")


def test_fingerprint_is_stable_hex_and_not_the_key() -> None:
    keys = KeyRing.from_bytes(RAW)
    assert keys.fingerprint == KeyRing.from_bytes(RAW).fingerprint
    assert len(keys.fingerprint) == 16
    int(keys.fingerprint, 16)
    assert keys.fingerprint not in RAW.hex()


def test_wrap_unwrap_round_trip_is_bound_to_context() -> None:
    keys = KeyRing.generate()
    dek = os.urandom(32)
    blob = keys.wrap(dek, context=b"tenant-a")
    assert keys.unwrap(blob, context=b"tenant-a") == dek
    with pytest.raises(WrongKeyError, match="cannot unwrap"):
        keys.unwrap(blob, context=b"tenant-b")


def test_unwrap_with_another_key_is_wrong_key_error() -> None:
    blob = KeyRing.generate().wrap(os.urandom(32), context=b"c")
    with pytest.raises(WrongKeyError, match="cannot unwrap"):
        KeyRing.generate().unwrap(blob, context=b"c")
    with pytest.raises(WrongKeyError, match="malformed"):
        KeyRing.generate().unwrap(b"\x01short", context=b"c")
    assert issubclass(WrongKeyError, KeyManagementError)


def test_derive_key_is_deterministic_and_separated_by_purpose() -> None:
    keys = KeyRing.from_bytes(RAW)
    a = keys.derive_key("audit-hmac")
    assert a == KeyRing.from_bytes(RAW).derive_key("audit-hmac")
    assert a != keys.derive_key("other")
    assert len(keys.derive_key("x", 64)) == 64
    with pytest.raises(ValidationError, match="purpose must be a non-empty str"):
        keys.derive_key("")
    with pytest.raises(ValidationError, match="length must be an int"):
        keys.derive_key("x", 8)


def test_repr_and_str_redact_the_key() -> None:
    keys = KeyRing.from_bytes(RAW)
    for text in (repr(keys), str(keys), f"{keys}"):
        assert text == f"KeyRing(fingerprint='{keys.fingerprint}', key=<redacted>)"
        assert keys.export_base64() not in text
        assert RAW.hex() not in text


def test_keyring_pickles_with_its_key() -> None:
    keys = KeyRing.generate()
    blob = keys.wrap(b"d" * 32, context=b"c")
    clone = pickle.loads(pickle.dumps(keys))
    assert clone == keys
    assert clone.unwrap(blob, context=b"c") == b"d" * 32


@pytest.mark.parametrize("name", ["acme", "A", "a.b-c_d", "0" * 64])
def test_validate_tenant_accepts_valid_names(name: str) -> None:
    assert validate_tenant(name) == name
    assert TENANT_PATTERN.match(name)


@pytest.mark.parametrize("name", ["", "_system", "-x", "a b", "a/b", "a" * 65, "acme\n", "é"])
def test_validate_tenant_rejects_invalid_names(name: str) -> None:
    with pytest.raises(ValidationError, match="invalid tenant name"):
        validate_tenant(name)


def test_validate_tenant_rejects_non_str() -> None:
    with pytest.raises(ValidationError, match="tenant must be a str, got NoneType"):
        validate_tenant(None)


def test_record_aad_differs_in_every_field() -> None:
    base = record_aad(b"s" * 16, 1, "t", 1, "text")
    variants = [
        record_aad(b"z" * 16, 1, "t", 1, "text"),
        record_aad(b"s" * 16, 2, "t", 1, "text"),
        record_aad(b"s" * 16, 1, "u", 1, "text"),
        record_aad(b"s" * 16, 1, "t", 2, "text"),
        record_aad(b"s" * 16, 1, "t", 1, "vector"),
        record_aad(b"s" * 16, 1, "tt", 1, "ext"),  # length prefixes keep shifted fields apart
    ]
    assert len({base, *variants}) == len(variants) + 1
