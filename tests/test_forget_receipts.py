"""Erasure as a privacy officer meets it (issue 29): three outcomes said apart, a signed receipt an auditor
can check without the master key, and an audit log that names tenants by a keyed digest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rehearsal.cli.forget_verbs import EXIT_NOT_HELD
from rehearsal.cli.main import KEY_ENV, main
from rehearsal.crypto.keys import KeyRing


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    value = KeyRing.generate().export_base64()
    monkeypatch.setenv(KEY_ENV, value)
    return value


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    capsys.readouterr()
    status = main([*argv, "--json"])
    out, err = capsys.readouterr()
    return status, (json.loads(out) if out.strip() else None), err


@pytest.fixture
def memory(tmp_path: Path, key: str, capsys: pytest.CaptureFixture[str]) -> str:
    rows = [
        {"text": f"ticket {i} from a customer", "label": i % 2, "who": ["acme", "globex"][i % 2]}
        for i in range(6)
    ]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = str(tmp_path / "mem")
    status, _, err = cli(capsys, "ingest", path, str(data), "--tenant-field", "who")
    assert status == 0, err
    return path


def test_forget_of_a_tenant_never_held_exits_apart_and_says_so(memory, capsys):
    status, report, _ = cli(capsys, "forget", memory, "--tenant", "acne")
    assert status == EXIT_NOT_HELD
    assert report["outcome"] == "never-held"
    capsys.readouterr()
    main(["forget", memory, "--tenant", "acne"])
    assert "never held here" in capsys.readouterr().out


def test_forget_twice_says_already_erased_the_second_time(memory, capsys):
    status, first, _ = cli(capsys, "forget", memory, "--tenant", "acme")
    assert (status, first["outcome"], first["removed"]) == (0, "erased", 3)
    status, again, _ = cli(capsys, "forget", memory, "--tenant", "acme")
    assert (status, again["outcome"], again["removed"]) == (0, "already-erased", 0)


def test_the_audit_log_names_tenants_by_a_keyed_digest(memory, capsys):
    cli(capsys, "forget", memory, "--tenant", "acme")
    log = (Path(memory) / "audit.log").read_text()
    assert "acme" not in log
    assert "globex" not in log
    entries = cli(capsys, "audit", "show", memory)[1]["entries"]
    forget = next(e for e in entries if e["kind"] == "forget")
    assert forget["details"]["tenant"].startswith("hmac:")


def test_clear_tenant_names_when_configured(tmp_path, key, capsys, monkeypatch):
    monkeypatch.setenv("REHEARSAL_AUDIT_TENANT_NAMES", "clear")
    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps({"text": "a ticket"}) + "\n")
    cli(capsys, "ingest", str(tmp_path / "mem"), str(data), "--tenant", "acme")
    assert '"acme"' in (tmp_path / "mem" / "audit.log").read_text()


def test_a_receipt_is_signed_and_checks_out_without_the_master_key(memory, tmp_path, capsys, monkeypatch):
    receipt = tmp_path / "receipt.json"
    status, _, _ = cli(capsys, "forget", memory, "--tenant", "acme", "--receipt", str(receipt))
    assert status == 0
    written = json.loads(receipt.read_text())
    assert (written["outcome"], written["tenant_entries_before"], written["tenant_entries_after"]) == (
        "erased",
        3,
        0,
    )
    assert (written["entries_before"], written["entries_after"]) == (6, 3)
    assert written["verification"]["ok"] is True
    assert written["audit_entry"]["seq"] >= 1
    assert "acme" not in receipt.read_text()
    monkeypatch.delenv(KEY_ENV)
    status, checked, err = cli(capsys, "check-receipt", str(receipt), "--signer", written["signer"])
    assert status == 0, err
    assert checked["pinned"] is True


def test_an_altered_receipt_fails_its_check(memory, tmp_path, capsys):
    receipt = tmp_path / "receipt.json"
    cli(capsys, "forget", memory, "--tenant", "acme", "--receipt", str(receipt))
    altered = json.loads(receipt.read_text())
    altered["tenant_entries_before"] = 0  # "there was nothing of theirs to erase"
    receipt.write_text(json.dumps(altered))
    status, _, err = cli(capsys, "check-receipt", str(receipt))
    assert status == 1
    assert "signature does not check out" in err


def test_a_receipt_signed_under_another_key_is_refused(memory, tmp_path, capsys, monkeypatch):
    receipt = tmp_path / "receipt.json"
    cli(capsys, "forget", memory, "--tenant", "acme", "--receipt", str(receipt))
    monkeypatch.setenv(KEY_ENV, KeyRing.generate().export_base64())
    status, _, err = cli(capsys, "check-receipt", str(receipt))
    assert status == 1
    assert "not by the expected signer" in err


def test_a_receipt_file_is_never_overwritten(memory, tmp_path, capsys):
    receipt = tmp_path / "receipt.json"
    receipt.write_text("keep me\n")
    status, _, err = cli(capsys, "forget", memory, "--tenant", "acme", "--receipt", str(receipt))
    assert status == 1
    assert "exists" in err
    assert receipt.read_text() == "keep me\n"
    assert cli(capsys, "count", memory)[1]["count"] == 6
