"""`rehearsal get / count / peek / export`, `ingest --tenant-field`, `audit show`: the verbs a vector-store
user reaches for, on a real encrypted memory built by the CLI."""

from __future__ import annotations

import json
import re
import stat
from typing import Any

import pytest

from rehearsal.cli.main import KEY_ENV, main
from rehearsal.crypto.keys import KeyRing

_ROWS = [
    {"text": f"{kind} question number {i}", "label": i % 3, "task": kind, "customer": customer}
    for i, (kind, customer) in enumerate(
        [("billing", "acme"), ("billing", "globex"), ("shipping", "acme"), ("shipping", "initech")] * 3
    )
]


@pytest.fixture(scope="module")
def module_key() -> str:
    return KeyRing.generate().export_base64()


@pytest.fixture(autouse=True)
def key(module_key: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(KEY_ENV, module_key)
    return module_key


@pytest.fixture(scope="module")
def memory(tmp_path_factory: pytest.TempPathFactory, module_key: str) -> str:
    """12 records of 3 tenants, ingested with --tenant-field (the verbs under test only read it)."""
    folder = tmp_path_factory.mktemp("verbs")
    data = folder / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _ROWS))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(KEY_ENV, module_key)
        argv = ["ingest", str(folder / "mem"), str(data), "--tenant-field", "customer", "--quiet"]
        assert main(argv) == 0
    return str(folder / "mem")


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    capsys.readouterr()
    status = main([*argv, "--json"])
    out, err = capsys.readouterr()
    assert status == 0, err
    return json.loads(out)


def error_of(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    capsys.readouterr()
    assert main(list(argv)) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    return err


def test_ingest_tenant_field_gives_each_row_its_own_tenant(memory, capsys):
    stats = run_json(capsys, "stats", memory)
    assert stats["entries"] == 12
    assert stats["tenants"] == {"acme": 6, "globex": 3, "initech": 3}
    entries = run_json(capsys, "peek", memory, "-n", "12")["entries"]
    assert [e["tenant"] for e in entries] == [r["customer"] for r in _ROWS]


def test_ingest_rejects_a_bad_tenant_value_naming_its_line(tmp_path, capsys):
    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps({"text": "a", "customer": "acme"}) + "\n" + json.dumps({"text": "b"}) + "\n")
    err = error_of(capsys, "ingest", str(tmp_path / "mem"), str(data), "--tenant-field", "customer")
    assert "line 2" in err
    assert "'customer'" in err
    assert not (tmp_path / "mem").exists()


def test_get_shows_metadata_and_text_only_when_asked(memory, capsys):
    plain = run_json(capsys, "get", memory, "--ids", "0,1")  # ids count from 0 in file order
    assert [e["id"] for e in plain["entries"]] == [0, 1]
    assert "text" not in plain["entries"][0]
    assert plain["entries"][0]["task"] == _ROWS[0]["task"]
    assert plain["entries"][0]["label"] == _ROWS[0]["label"]
    with_text = run_json(capsys, "get", memory, "--ids", "1,99", "--with-text")
    assert [e["text"] for e in with_text["entries"]] == [_ROWS[1]["text"]]
    assert with_text["missing"] == [99]


def test_get_of_ids_that_do_not_exist_is_an_error(memory, capsys):
    assert "99" in error_of(capsys, "get", memory, "--ids", "99")


def test_count_with_and_without_a_filter(memory, capsys):
    assert run_json(capsys, "count", memory)["count"] == 12
    assert run_json(capsys, "count", memory, "--where", '{"task": "billing"}')["count"] == 6
    assert run_json(capsys, "count", memory, "--where", '{"label": 0}')["count"] == 4


def test_count_with_a_bad_filter_fails_in_one_line(memory, capsys):
    assert "--where" in error_of(capsys, "count", memory, "--where", "{task")


def test_peek_shows_the_first_n_entries_and_the_total(memory, capsys):
    report = run_json(capsys, "peek", memory, "-n", "3", "--where", '{"task": "shipping"}')
    assert report["total"] == 6
    assert len(report["entries"]) == 3
    assert {e["task"] for e in report["entries"]} == {"shipping"}


def test_export_with_text_writes_an_owner_only_jsonl_that_ingest_reads_back(memory, tmp_path, capsys):
    out = tmp_path / "export.jsonl"
    report = run_json(capsys, "export", memory, "--out", str(out), "--with-text")
    assert report["exported"] == 12
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["text"] for r in lines] == [r["text"] for r in _ROWS]
    copy = tmp_path / "copy"
    assert main(["ingest", str(copy), str(out), "--tenant-field", "tenant", "--quiet"]) == 0
    assert run_json(capsys, "count", str(copy), "--where", '{"task": "billing"}')["count"] == 6


def test_export_without_text_holds_no_text(memory, tmp_path, capsys):
    out = tmp_path / "meta.jsonl"
    report = run_json(capsys, "export", memory, "--out", str(out), "--where", '{"task": "billing"}')
    assert report["exported"] == 6
    assert all("text" not in json.loads(line) for line in out.read_text().splitlines())
    assert "question" not in out.read_text()


def test_export_never_overwrites_a_file(memory, tmp_path, capsys):
    out = tmp_path / "taken.jsonl"
    out.write_text("keep me\n")
    assert "exists" in error_of(capsys, "export", memory, "--out", str(out))
    assert out.read_text() == "keep me\n"


def test_audit_show_lists_verified_entries_with_iso_times(memory, capsys):
    report = run_json(capsys, "audit", "show", memory)
    assert report["verified"] is True
    assert report["total"] >= 1
    assert [e["kind"] for e in report["entries"]] == ["baseline", "ingest"]  # one batch, three tenants
    first = report["entries"][-1]
    assert first["actor"] == "cli"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    capsys.readouterr()
    assert main(["audit", "show", memory, "--last", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "verified" in lines[0]
    assert re.search(r"\s1?\s+\d{4}-\d\d-\d\dT.*Z\s+ingest\s+cli", lines[-1])


def test_audit_show_of_a_tampered_log_fails(memory, tmp_path, capsys):
    import shutil

    copy = tmp_path / "mem"
    shutil.copytree(memory, copy)
    log = copy / "audit.log"
    log.write_bytes(log.read_bytes().replace(b'"ingest"', b'"delete"', 1))
    assert error_of(capsys, "audit", "show", str(copy))


def test_last_is_only_for_show(memory, capsys):
    assert "--last" in error_of(capsys, "audit", "verify", memory, "--last", "2")
