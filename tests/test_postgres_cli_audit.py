"""The CLI verbs that write or read an audit log, on a ``postgresql://`` memory: a server memory has no
folder, so its log is the file ``--log`` names; without one the verb fails clearly and writes nothing
(a URL taken as a folder once put a ``postgresql:`` tree in the working directory)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rehearsal.cli.main import KEY_ENV, main
from rehearsal.crypto.keys import KeyRing


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, object], str]:
    status = main([*argv, "--json"])
    out, err = capsys.readouterr()
    return status, (json.loads(out) if status == 0 else {}), err


@pytest.fixture
def server_memory(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> str:
    monkeypatch.setenv(KEY_ENV, KeyRing.generate().export_base64())
    monkeypatch.chdir(tmp_path)  # where a URL taken for a folder would leave its tree
    data = tmp_path / "data.jsonl"
    rows = [
        {"text": "the cat sat on the mat", "task": "a", "label": 1, "retain_until": "2020-01-01"},
        {"text": "the dog ran in the park", "task": "b", "label": 2},
    ]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    status, _, err = _run(
        capsys, "ingest", postgres_url, str(data), "--metadata-fields", "task,label,retain_until"
    )
    assert status == 0, err
    return postgres_url


@pytest.mark.parametrize(
    "verb",
    [("expire",), ("audit",), ("audit", "show"), ("approve", "{url}", "run-1/phase-0", "--approver", "ann")],
)
def test_a_log_verb_without_log_on_a_server_memory_fails_clearly(
    server_memory: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], verb: tuple[str, ...]
) -> None:
    argv = [part.replace("{url}", server_memory) for part in verb]
    if "{url}" not in verb:
        argv.append(server_memory)
    status, _, err = _run(capsys, *argv)
    assert status != 0
    assert "lives on a server" in err
    assert "--log FILE" in err
    assert not (tmp_path / "postgresql:").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.jsonl"]


def test_expire_with_a_log_file_is_audited_and_the_log_verifies_bound_to_the_memory(
    server_memory: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = str(tmp_path / "server-audit.log")
    status, report, err = _run(capsys, "expire", server_memory, "--log", log)
    assert status == 0, err
    assert report["audited"] is True
    assert report["entries"] == 1
    status, verified, err = _run(capsys, "audit", server_memory, "--log", log)
    assert status == 0, err
    assert verified["kinds"] == {"baseline": 1, "expire": 1}
    assert verified["store_id"] is not None  # checked against this memory, not just a whole chain
    status, shown, err = _run(capsys, "audit", "show", server_memory, "--log", log)
    assert status == 0, err
    assert shown["total"] == 2
    assert not (tmp_path / "postgresql:").exists()
