"""An audit log checked by a verification key alone: it verifies and shows, never writes, never decrypts,
and catches the same tampering the master key catches."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from rehearsal.cli.main import KEY_ENV, main
from rehearsal.crypto.keys import KeyRing
from rehearsal.errors import ConfigError, IntegrityError, NotFoundError, ValidationError, WrongKeyError
from rehearsal.governance.audit_key import AuditKey
from rehearsal.governance.audit_log import AuditLog
from rehearsal.governance.audited import log_ingest


def make_log(folder: Path, keys: KeyRing, n: int = 4) -> AuditLog:
    log = AuditLog.open(folder / "audit.log", keys)
    for i in range(n):
        log_ingest(log, [i], tenant="acme", tags=[], actor="bot")
    return log


def test_a_verification_key_verifies_and_refuses_to_write(tmp_path: Path) -> None:
    keys = KeyRing.generate()
    make_log(tmp_path, keys)
    audit_key = AuditKey.of(keys)
    log = AuditLog.open(tmp_path / "audit.log", audit_key, create=False)
    assert log.verify() == 4
    assert "redacted" in repr(audit_key)
    assert audit_key.mac_key.hex() not in repr(audit_key) + repr(log)
    before = (tmp_path / "audit.log").read_bytes()
    with pytest.raises(ConfigError, match="verification key"):
        log_ingest(log, [99], tenant="acme", tags=[], actor="bot")
    with pytest.raises(ConfigError, match="verification key"):
        log.pseudonym("acme")
    assert (tmp_path / "audit.log").read_bytes() == before
    with pytest.raises(NotFoundError):
        AuditLog.open(tmp_path / "elsewhere.log", audit_key)  # it never creates a log


def test_it_catches_an_edit_and_another_masters_log(tmp_path: Path) -> None:
    keys = KeyRing.generate()
    log = make_log(tmp_path, keys)
    audit_key = AuditKey.of(keys)
    raw = log.path.read_bytes().splitlines(keepends=True)
    raw[1] = raw[1].replace(b'"actor":"bot"', b'"actor":"eve"')
    log.path.write_bytes(b"".join(raw))
    with pytest.raises(IntegrityError):
        AuditLog.open(log.path, audit_key, create=False).verify()
    other = tmp_path / "other"
    other.mkdir()
    make_log(other, KeyRing.generate())
    with pytest.raises(WrongKeyError):
        AuditLog.open(other / "audit.log", audit_key, create=False)


def test_the_key_file_is_owner_only_never_overwritten_and_checked(tmp_path: Path) -> None:
    audit_key = AuditKey.of(KeyRing.generate())
    path = tmp_path / "verify.key"
    audit_key.to_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert AuditKey.from_file(path) == audit_key
    with pytest.raises(ValidationError, match="never overwritten"):
        audit_key.to_file(path)
    bad = tmp_path / "bad.key"
    bad.write_text(
        json.dumps({"kind": "rehearsal-audit-verify-key", "version": 1, "fingerprint": "f", "key": "xx"})
    )
    with pytest.raises(ConfigError, match=r"bad\.key"):
        AuditKey.from_file(bad)
    with pytest.raises(ConfigError, match=r"not a version-1"):
        AuditKey.from_file(_write(tmp_path / "k.json", {"kind": "other"}))


def _write(path: Path, body: object) -> Path:
    path.write_text(json.dumps(body))
    return path


def test_the_cli_exports_the_key_and_verifies_without_the_master_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = KeyRing.generate()
    monkeypatch.setenv(KEY_ENV, keys.export_base64())
    memory = tmp_path / "mem"
    data = tmp_path / "d.jsonl"
    data.write_text(
        "".join(json.dumps({"text": f"record number {i}", "label": i % 2}) + "\n" for i in range(4))
    )
    assert main(["ingest", str(memory), str(data), "--task", "t", "--quiet"]) == 0
    key_file = tmp_path / "auditor.key"
    assert main(["audit", "export-key", str(memory), "--out", str(key_file)]) == 0
    capsys.readouterr()
    monkeypatch.delenv(KEY_ENV)
    assert main(["audit", "verify", str(memory), "--verify-key", str(key_file), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
    assert report["entries"] >= 1
    assert main(["audit", "show", str(memory), "--verify-key", str(key_file)]) == 0
    assert "ingest" in capsys.readouterr().out
    # The key opens no memory: the records stay sealed to whoever holds only it.
    assert main(["peek", str(memory), "--with-text"]) != 0
    assert KEY_ENV in capsys.readouterr().err
    assert main(["audit", "verify", str(memory), "--out", str(tmp_path / "x")]) != 0
