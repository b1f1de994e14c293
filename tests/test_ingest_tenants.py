"""Ingest of a file whose rows belong to many tenants (issue 29): one transaction, one generation and one
audit entry per batch, each tenant's rows sealed under its own key; every extra column kept as metadata."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from rehearsal.cli.main import KEY_ENV, main
from rehearsal.crypto.keys import KeyRing
from rehearsal.errors import NotFoundError, ValidationError
from rehearsal.memory.facade import RehearsalMemory

TENANTS = ["acme", "globex", "initech"]


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> KeyRing:
    ring = KeyRing.generate()
    monkeypatch.setenv(KEY_ENV, ring.export_base64())
    return ring


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    capsys.readouterr()
    status = main([*argv, "--json"])
    out, err = capsys.readouterr()
    assert status == 0, err
    return json.loads(out)


def alternating_rows(n: int) -> list[dict[str, Any]]:
    return [
        {"text": f"question number {i} about an order", "label": i % 2, "customer": TENANTS[i % 3]}
        for i in range(n)
    ]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_an_alternating_tenant_file_commits_one_generation_per_batch(tmp_path, keys, capsys):
    data = write_jsonl(tmp_path / "rows.jsonl", alternating_rows(30))
    mem = str(tmp_path / "mem")
    run_json(capsys, "ingest", mem, str(data), "--tenant-field", "customer", "--batch-size", "16")
    with RehearsalMemory.open(mem, keys=keys, read_only=True) as opened:
        assert opened.generation == 2  # two batches (16 + 14 rows), whatever the tenants' order
    ingests = [e for e in run_json(capsys, "audit", "show", mem)["entries"] if e["kind"] == "ingest"]
    assert len(ingests) == 2
    assert sorted(ingests[0]["details"]["tenants"].values()) == [5, 5, 6]  # acme 6, globex 5, initech 5


def test_ids_of_a_mixed_batch_follow_the_file_order(tmp_path, keys, capsys):
    rows = alternating_rows(9)
    mem = str(tmp_path / "mem")
    run_json(
        capsys, "ingest", mem, str(write_jsonl(tmp_path / "rows.jsonl", rows)), "--tenant-field", "customer"
    )
    entries = run_json(capsys, "peek", mem, "-n", "9")["entries"]
    assert [e["tenant"] for e in entries] == [r["customer"] for r in rows]
    got = run_json(capsys, "get", mem, "--ids", ",".join(str(i) for i in range(9)), "--with-text")
    assert [e["text"] for e in got["entries"]] == [r["text"] for r in rows]


def test_forgetting_one_tenant_of_a_mixed_batch_leaves_the_others_readable(tmp_path, keys):
    with RehearsalMemory.create(tmp_path / "mem", keys=keys, dim=4, encoder_name="test") as mem:
        vectors = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
        ids = mem.add(["a0", "b0", "a1", "b1"], tenant=["a", "b", "a", "b"], vectors=vectors)
        assert mem.generation == 1
        assert mem.forget(tenant="a") == 2
        assert mem.get_texts([ids[1], ids[3]]) == ["b0", "b1"]
        with pytest.raises(NotFoundError, match=str(ids[0])):
            mem.get_texts([ids[0]])
        assert mem.verify()["entries"] == 2


def test_a_tenant_list_of_the_wrong_length_is_refused(tmp_path, keys):
    with RehearsalMemory.create(tmp_path / "mem", keys=keys, dim=2, encoder_name="test") as mem:
        with pytest.raises(ValidationError, match="tenant lists 1 names for 2 records"):
            mem.add(["x", "y"], tenant=["a"], vectors=[[1, 0], [0, 1]])
        assert len(mem) == 0


def test_upsert_of_a_mixed_batch_replaces_each_tenants_own_record(tmp_path, keys):
    with RehearsalMemory.create(tmp_path / "mem", keys=keys, dim=2, encoder_name="test") as mem:
        metadata = [{"ref": 1}, {"ref": 1}]
        mem.upsert(
            ["a old", "b old"], key="ref", metadata=metadata, tenant=["a", "b"], vectors=[[1, 0], [0, 1]]
        )
        _, replaced = mem.upsert(["a new"], key="ref", metadata=[{"ref": 1}], tenant=["a"], vectors=[[1, 1]])
        assert len(replaced) == 1
        assert sorted(mem.get_texts(mem.ids())) == ["a new", "b old"]


def test_ingest_keeps_every_extra_column_as_metadata_by_default(tmp_path, keys, capsys):
    data = tmp_path / "rows.csv"
    with data.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label", "tags", "channel"])
        writer.writerow(["the charger caught fire", "hardware", "safety,urgent", "phone"])
        writer.writerow(["how do I reset my password", "account", "", "email"])
    mem = str(tmp_path / "mem")
    run_json(capsys, "ingest", mem, str(data))
    assert run_json(capsys, "count", mem, "--where", '{"tags": "safety"}')["count"] == 1
    entries = run_json(capsys, "get", mem, "--ids", "0,1")["entries"]
    assert [e.get("channel") for e in entries] == ["phone", "email"]


def test_metadata_fields_narrows_what_ingest_keeps(tmp_path, keys, capsys):
    rows = [{"text": "the charger caught fire", "tags": ["safety"], "channel": "phone"}]
    mem = str(tmp_path / "mem")
    run_json(
        capsys, "ingest", mem, str(write_jsonl(tmp_path / "rows.jsonl", rows)), "--metadata-fields", "channel"
    )
    entry = run_json(capsys, "get", mem, "--ids", "0")["entries"][0]
    assert entry.get("channel") == "phone"
    assert not entry.get("tags")
