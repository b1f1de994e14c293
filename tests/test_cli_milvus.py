"""The CLI on a memory whose vectors live in Milvus: ``ingest --vectors milvus://...`` creates it there, and
the other verbs find the server from the memory itself (or take ``--vectors`` again)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rehearsal.cli.main import KEY_ENV, main
from rehearsal.crypto.keys import KeyRing

_ROWS = [{"text": f"{kind} question {i}", "task": kind} for i, kind in enumerate(["billing", "shipping"] * 4)]


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    capsys.readouterr()
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_the_cli_ingests_into_milvus_and_searches_it_with_a_filter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], milvus_url: str
) -> None:
    monkeypatch.setenv(KEY_ENV, KeyRing.generate().export_base64())
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _ROWS))
    path = str(tmp_path / "mem")
    _json(capsys, "ingest", path, str(data), "--metadata-fields", "task", "--vectors", milvus_url)
    assert _json(capsys, "stats", path)["index_spec"].startswith("Milvus")
    found = _json(capsys, "search", path, "billing question", "-k", "8", "--where", '{"task": "shipping"}')
    ids = {hit["id"] for hit in found["results"][0]["hits"]}
    assert ids == {1, 3, 5, 7}
    assert _json(capsys, "verify", path, "--vectors", milvus_url)["entries"] == 8
