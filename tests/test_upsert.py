"""Re-ingesting the same records (issue 15, item 12): an external id replaces its record in the same
transaction as the add, per tenant, and a file that names an id twice is refused before anything changes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rehearsal as rh
from rehearsal.cli.main import KEY_ENV, main
from rehearsal.governance.audit_log import AuditLog, default_log_path

DIM = 8


def _vectors(n: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(n, DIM))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def memory(tmp_path: Path, keys: rh.KeyRing) -> Any:
    mem = rh.RehearsalMemory.create(tmp_path / "m", keys=keys, dim=DIM, encoder_name="test-vectors")
    yield mem
    mem.close()


def test_an_external_id_replaces_its_record_and_only_within_its_tenant(memory: Any) -> None:
    first, replaced = memory.upsert(
        ["a v1", "b v1"], key="doc", metadata=[{"doc": "a"}, {"doc": "b"}], vectors=_vectors(2, 0)
    )
    assert replaced == []
    other, _ = memory.upsert(
        ["a elsewhere"], key="doc", metadata=[{"doc": "a"}], tenant="t2", vectors=_vectors(1, 1)
    )
    again, replaced = memory.upsert(
        ["a v2"], key="doc", metadata=[{"doc": "a", "label": 3}], vectors=_vectors(1, 2)
    )
    assert replaced == [first[0]]
    assert len(memory) == 3
    assert memory.get_texts([again[0], first[1], other[0]]) == ["a v2", "b v1", "a elsewhere"]
    assert memory.entries(again)[again[0]].label == 3
    with pytest.raises(rh.NotFoundError):
        memory.get_texts([first[0]])


@pytest.mark.parametrize(
    ("key", "metadata", "message"),
    [
        ("doc", [{"doc": "a"}, {"doc": "a"}], "more than once"),
        ("doc", [{"doc": "a"}, {}], r"record 1: 'doc' must be a non-empty str or int"),
        ("label", [{"label": 1}, {"label": 2}], "extra-metadata field name"),
        ('doc"]', [{'doc"]': "a"}, {'doc"]': "b"}], "extra-metadata field name"),
    ],
)
def test_a_bad_upsert_changes_nothing(
    memory: Any, key: str, metadata: list[dict[str, Any]], message: str
) -> None:
    memory.upsert(["kept"], key="doc", metadata=[{"doc": "a"}], vectors=_vectors(1, 0))
    generation = memory.generation
    with pytest.raises(rh.ValidationError, match=message):
        memory.upsert(["x", "y"], key=key, metadata=metadata, vectors=_vectors(2, 1))
    assert (len(memory), memory.generation) == (1, generation)


def test_reingesting_a_file_with_an_id_field_replaces_instead_of_duplicating(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = rh.KeyRing.generate()
    monkeypatch.setenv(KEY_ENV, keys.export_base64())
    data = tmp_path / "d.jsonl"
    rows = [{"id": f"r{i}", "text": f"record number {i}", "label": i % 2} for i in range(5)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = str(tmp_path / "mem")
    argv = ["ingest", path, str(data), "--id-field", "id", "--quiet", "--json"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["replaced"] == 0
    rows[2]["text"] = "record number two, corrected"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["added"], report["replaced"], report["entries"]) == (5, 5, 5)
    with rh.RehearsalMemory.open(path, keys=keys, read_only=True) as mem:
        texts = sorted(mem.get_texts(mem.ids()))
    assert "record number two, corrected" in texts
    assert "record number 2" not in texts
    kinds = [e.kind for e in AuditLog.open(default_log_path(path), keys, create=False).entries()]
    assert kinds.count("delete") == 1  # the replaced records, logged as such


def test_a_file_that_names_an_id_twice_is_refused_before_anything_is_added(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(KEY_ENV, rh.KeyRing.generate().export_base64())
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"id": i % 2, "text": f"t {i}"}) + "\n" for i in range(3)))
    assert main(["ingest", str(tmp_path / "mem"), str(data), "--id-field", "id", "--quiet"]) == 1
    assert "d.jsonl line 3: 'id' 0 already appears at d.jsonl line 1" in capsys.readouterr().err
    assert not (tmp_path / "mem").exists()
