"""`rehearsal init`: what an embedding-only memory without a key leaves unprotected is said plainly, and a
memory can be made with another encoder (``--encoder``) on a chosen device (``--device``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rehearsal.cli.main import KEY_ENV, main
from rehearsal.crypto.keys import KeyRing
from rehearsal.embedding import default_model_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    status, out, err = run(capsys, *argv, "--json")
    assert status == 0, err
    return json.loads(out)


def test_embedding_only_without_a_key_says_vectors_are_in_the_clear(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    status, out, _ = run(capsys, "init", str(tmp_path / "a"), "--embedding-only")
    assert status == 0
    assert "vectors are stored in the clear" in out
    assert run_json(capsys, "init", str(tmp_path / "b"), "--embedding-only")["vectors_in_clear"] is True


def test_embedding_only_with_a_key_seals_its_vectors_and_says_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KeyRing.generate().export_base64())
    status, out, _ = run(capsys, "init", str(tmp_path / "a"), "--embedding-only")
    assert status == 0
    assert "in the clear" not in out
    assert run_json(capsys, "init", str(tmp_path / "b"), "--embedding-only")["vectors_in_clear"] is False


def test_ingest_that_creates_a_keyless_embedding_only_memory_says_so_too(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps({"text": "a note", "ref": "doc-1"}) + "\n")
    argv = ["ingest", str(tmp_path / "m"), str(data), "--embedding-only", "--source-field", "ref", "--quiet"]
    assert run_json(capsys, *argv)["vectors_in_clear"] is True


@pytest.fixture
def other_encoder(tmp_path: Path) -> Path:
    """A model folder under another name (the packaged MiniLM, linked): a memory records that name."""
    link = tmp_path / "my-encoder"
    link.symlink_to(default_model_path(), target_is_directory=True)
    return link


def test_a_memory_made_with_encoder_needs_it_again_to_embed(tmp_path, capsys, monkeypatch, other_encoder):
    monkeypatch.setenv(KEY_ENV, KeyRing.generate().export_base64())
    mem = str(tmp_path / "m")
    made = run_json(capsys, "init", mem, "--encoder", str(other_encoder), "--device", "cpu")
    assert made["encoder"] == "my-encoder"
    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps({"text": "refund my order", "task": "billing"}) + "\n")
    status, _, err = run(capsys, "ingest", mem, str(data), "--quiet")
    assert status == 1
    assert "--encoder" in err
    assert (
        run_json(capsys, "ingest", mem, str(data), "--quiet", "--encoder", str(other_encoder))["added"] == 1
    )
    hits = run_json(capsys, "search", mem, "refund", "--encoder", str(other_encoder))["results"][0]["hits"]
    assert [h["id"] for h in hits] == [0]
    assert run_json(capsys, "count", mem)["count"] == 1  # reading needs no encoder


def test_a_different_encoder_is_refused(tmp_path, capsys, monkeypatch, other_encoder):
    monkeypatch.setenv(KEY_ENV, KeyRing.generate().export_base64())
    mem = str(tmp_path / "m")
    assert run_json(capsys, "init", mem)["encoder"] == "sentence-transformers/all-MiniLM-L6-v2"
    status, _, err = run(capsys, "search", mem, "refund", "--encoder", str(other_encoder))
    assert status == 1
    assert "my-encoder" in err


def test_an_unknown_device_is_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KeyRing.generate().export_base64())
    status, _, err = run(capsys, "init", str(tmp_path / "m"), "--device", "warp-drive")
    assert status == 1
    assert err.count("\n") == 1
    assert "warp-drive" in err
    assert not (tmp_path / "m").exists()
