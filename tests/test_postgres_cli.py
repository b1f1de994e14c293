"""The CLI's memory verbs on a ``postgresql://`` URL: the same verbs, and the password never echoed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import psycopg
import pytest

from rehearsal.cli.main import KEY_ENV, main
from rehearsal.crypto.keys import KeyRing


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, object]:
    status = main([*argv, "--json"])
    out, err = capsys.readouterr()
    assert status == 0, err
    result: dict[str, object] = json.loads(out)
    return result


def test_ingest_search_forget_on_a_server_memory(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(KEY_ENV, KeyRing.generate().export_base64())
    monkeypatch.delenv("PGPASSWORD", raising=False)
    password = psycopg.conninfo.conninfo_to_dict(postgres_url)["password"]
    assert isinstance(password, str)
    data = tmp_path / "data.jsonl"
    lines = [
        {"text": f"the {w} sat on the mat", "task": "pets", "label": i} for i, w in enumerate(["cat", "dog"])
    ]
    lines.append({"text": "an invoice is overdue", "task": "billing", "label": 5})
    data.write_text("".join(json.dumps(line) + "\n" for line in lines))

    report = _run(
        capsys, "ingest", postgres_url, str(data), "--metadata-fields", "task,label", "--tenant", "acme"
    )
    assert (report["created"], report["added"]) == (True, 3)
    again = _run(
        capsys, "ingest", postgres_url, str(data), "--metadata-fields", "task,label", "--tenant", "globex"
    )
    assert (again["created"], again["entries"]) == (False, 6)
    hits = _run(
        capsys, "search", postgres_url, "a dog", "-k", "1", "--where", '{"task": "pets"}', "--with-text"
    )
    assert "dog" in json.dumps(hits["results"])
    assert _run(capsys, "verify", postgres_url)["entries"] == 6
    assert _run(capsys, "forget", postgres_url, "--tenant", "acme")["removed"] == 3
    assert _run(capsys, "stats", postgres_url)["entries"] == 3
    # Every report named the memory by its URL, the password moved to libpq's environment variable.
    assert password not in json.dumps([report, again, hits])
    assert os.environ.get("PGPASSWORD") == password
