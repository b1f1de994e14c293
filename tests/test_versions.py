"""Versions and rollback: the memory returns to exactly its earlier search results, the model pointer too."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rehearsal.crypto.keys import KeyRing
from rehearsal.errors import IntegrityError, NotFoundError, StoreFormatError, ValidationError
from rehearsal.governance.audit_log import AuditLog
from rehearsal.governance.audited import AuditedMemory, log_train_update
from rehearsal.governance.versions import list_versions, record_version, rollback
from rehearsal.memory.facade import RehearsalMemory

DIM = 8


def snapshot(memory: RehearsalMemory, queries: np.ndarray) -> list[list[tuple[int, float]]]:
    return [[(h.id, round(h.score, 6)) for h in row] for row in memory.search_vectors(queries, k=6)]


def test_rollback_restores_search_results_and_model_outputs(tmp_path: Path, keys: KeyRing) -> None:
    rng = np.random.default_rng(0)
    memory = RehearsalMemory.create(tmp_path / "mem", keys=keys, dim=DIM, encoder_name="test-encoder")
    log = AuditLog.open(tmp_path / "mem" / "audit.log", keys)
    first = memory.add([f"old {i}" for i in range(10)], vectors=rng.normal(size=(10, DIM)).astype(np.float32))
    weights = {}
    for name in ("w1", "w2"):
        weights[name] = rng.normal(size=(DIM, 3))
        np.save(tmp_path / f"{name}.npy", weights[name])
    queries = rng.normal(size=(5, DIM)).astype(np.float32)
    v1 = record_version(memory, weights=str(tmp_path / "w1.npy"), config={"lr": 0.1}, log=log, run_id="r1")
    before = snapshot(memory, queries)
    later = memory.add([f"new {i}" for i in range(7)], vectors=rng.normal(size=(7, DIM)).astype(np.float32))
    record_version(memory, weights=str(tmp_path / "w2.npy"), config={"lr": 0.2}, log=log, run_id="r2")
    assert snapshot(memory, queries) != before
    result = rollback(memory, v1.version, log=log, actor="ops")
    assert (result.removed, result.exact) == (later, True)
    assert memory.ids() == first
    assert snapshot(memory, queries) == before
    assert memory.texts_by_id(later) == {}
    versions, current = list_versions(memory.path)
    assert ([v.version for v in versions], current) == ([1, 2], 1)
    outputs = queries @ np.load(result.weights)
    np.testing.assert_array_equal(outputs, queries @ weights["w1"])
    memory.close()
    # Reopening reads the rolled-back state from disk, and the log shows the rollback.
    with RehearsalMemory.open(tmp_path / "mem", keys=keys) as reopened:
        assert snapshot(reopened, queries) == before
    assert [e.kind for e in log.entries()] == ["train-update", "train-update", "rollback"]


def test_rollback_after_an_erasure_is_reported_as_inexact(tmp_path: Path, keys: KeyRing) -> None:
    rng = np.random.default_rng(1)
    memory = RehearsalMemory.create(tmp_path / "mem", keys=keys, dim=DIM, encoder_name="test-encoder")
    ids = memory.add([f"t {i}" for i in range(4)], vectors=rng.normal(size=(4, DIM)).astype(np.float32))
    v1 = record_version(memory, weights="w1", config={})
    memory.delete(ids[:1])  # erasure is final: rollback does not bring it back
    result = rollback(memory, v1.version)
    assert (result.removed, result.exact) == ([], False)
    assert memory.ids() == ids[1:]
    with pytest.raises(NotFoundError, match=r"no version 9 .* known versions: \[1\]"):
        rollback(memory, 9)
    memory.close()


def test_cli_versions_and_rollback(
    tmp_path: Path, keys: KeyRing, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from rehearsal.cli.main import KEY_ENV, main

    rng = np.random.default_rng(2)
    memory = RehearsalMemory.create(tmp_path / "mem", keys=keys, dim=DIM, encoder_name="test-encoder")
    memory.add(["a", "b"], vectors=rng.normal(size=(2, DIM)).astype(np.float32))
    record_version(memory, weights="ckpt/v1", config={})
    later = memory.add(["c"], vectors=rng.normal(size=(1, DIM)).astype(np.float32))
    record_version(memory, weights="ckpt/v2", config={})
    memory.close()
    monkeypatch.setenv(KEY_ENV, keys.export_base64())
    path = str(tmp_path / "mem")
    assert main(["versions", path, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["current"] == 2
    assert main(["rollback", path, "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["removed"], report["weights"], report["entries"], report["audited"]) == (
        later,
        str(Path("ckpt/v1").resolve()),  # a relative path is taken from where it was recorded
        2,
        True,
    )
    assert main(["rollback", path]) == 1
    assert "rollback needs a VERSION" in capsys.readouterr().err
    assert main(["audit", "verify", path, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["kinds"] == {"baseline": 1, "rollback": 1}


def test_withdrawing_a_version_leaves_a_rollback_made_since_in_place(tmp_path: Path, keys: KeyRing) -> None:
    from rehearsal.governance.versions import withdraw_update

    memory = RehearsalMemory.create(tmp_path / "mem", keys=keys, dim=4, encoder_name="test-encoder")
    vectors = np.eye(4, dtype=np.float32)
    memory.add(["a"], vectors=vectors[:1])
    record_version(memory, weights="w1", config={}, update="run/phase-0")
    memory.add(["b"], vectors=vectors[1:2])
    record_version(memory, weights="w2", config={}, update="run/phase-1")
    rollback(memory, 1)
    withdrawn = withdraw_update(memory.path, "run/phase-1")
    assert withdrawn is not None
    assert withdrawn.version == 2
    versions, current = list_versions(memory.path)
    assert current == 1
    assert [v.withdrawn for v in versions] == [False, True]
    assert withdraw_update(memory.path, "run/phase-1") is None  # once only
    memory.close()


def _edit_record(memory: RehearsalMemory, index: int, change: Any) -> None:
    path = memory.path / "versions.json"
    data = json.loads(path.read_text())
    change(data["versions"][index])
    path.write_text(json.dumps(data))


def test_rollback_refuses_an_id_boundary_the_audit_log_disagrees_with(tmp_path: Path, keys: KeyRing) -> None:
    rng = np.random.default_rng(3)
    memory = RehearsalMemory.create(tmp_path / "mem", keys=keys, dim=DIM, encoder_name="test-encoder")
    log = AuditLog.open(tmp_path / "mem" / "audit.log", keys)
    audited = AuditedMemory(memory, log)
    first = audited.add([f"v1 {i}" for i in range(6)], vectors=rng.normal(size=(6, DIM)).astype(np.float32))
    record_version(memory, weights="w1", config={}, log=log, run_id="r1")
    audited.add(["v2"], vectors=rng.normal(size=(1, DIM)).astype(np.float32))
    record_version(memory, weights="w2", config={}, log=log, run_id="r2")
    _edit_record(memory, 0, lambda r: r.update(id_boundary=0))  # a plain file: nothing else stops this
    with pytest.raises(IntegrityError, match="disagrees with the audit log"):
        rollback(memory, 1, log=log)
    assert len(memory) == 7  # nothing was deleted
    assert [e.details.get("id_boundary") for e in log.entries() if e.kind == "train-update"] == [6, 7]
    _edit_record(memory, 0, lambda r: r.update(id_boundary=6))
    assert rollback(memory, 1, log=log).removed == [6]  # the true boundary rolls back as it should
    assert memory.ids() == first
    memory.close()


def test_with_an_older_log_rollback_deletes_only_entries_logged_after_the_version(
    tmp_path: Path, keys: KeyRing
) -> None:
    rng = np.random.default_rng(4)
    memory = RehearsalMemory.create(tmp_path / "mem", keys=keys, dim=DIM, encoder_name="test-encoder")
    log = AuditLog.open(tmp_path / "mem" / "audit.log", keys)
    audited = AuditedMemory(memory, log)
    first = audited.add([f"v1 {i}" for i in range(6)], vectors=rng.normal(size=(6, DIM)).astype(np.float32))
    for number in (1, 2):
        record_version(memory, weights=f"w{number}", config={})
        # The entry as rehearsal wrote it before entries named the id boundary.
        log_train_update(
            log, run_id=f"r{number}", config={}, data_ids=[], metrics={}, decision="pass", version=number
        )
        if number == 1:
            audited.add(["v2"], vectors=rng.normal(size=(1, DIM)).astype(np.float32))
    _edit_record(memory, 0, lambda r: r.update(id_boundary=3))
    with pytest.raises(IntegrityError, match="does not show added after it"):
        rollback(memory, 1, log=log)
    assert len(memory) == 7
    _edit_record(memory, 0, lambda r: r.update(id_boundary=6))
    assert rollback(memory, 1, log=log).removed == [6]
    assert memory.ids() == first
    memory.close()


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda r: r.pop("id_boundary"), "lacks 'id_boundary'"),
        (lambda r: r.update(id_boundary="0"), "'id_boundary' of type str"),
        (lambda r: r.update(id_boundary=True), "'id_boundary' of type bool"),
        (lambda r: r.update(version=-1), "'version' -1, below its least value"),
        (lambda r: r.update(surprise=1), "unknown fields"),
    ],
    ids=["missing", "string", "bool", "negative-version", "unknown-field"],
)
def test_a_malformed_version_record_is_our_error_not_a_type_error(
    tmp_path: Path, keys: KeyRing, change: Any, match: str
) -> None:
    memory = RehearsalMemory.create(tmp_path / "mem", keys=keys, dim=4, encoder_name="test-encoder")
    memory.add(["a"], vectors=np.eye(4, dtype=np.float32)[:1])
    record_version(memory, weights="w1", config={})
    _edit_record(memory, 0, change)
    with pytest.raises(StoreFormatError, match=match):
        list_versions(memory.path)
    with pytest.raises(StoreFormatError, match=match):
        rollback(memory, 1)
    assert len(memory) == 1
    memory.close()


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda d: d["versions"][0].update(id_boundary=0), "fails its check"),
        (lambda d: d["versions"][0].update(tag="é" * 64), "fails its check"),
        (lambda d: d.update(tag="\u00e9"), "fails its check"),
        (lambda d: d["versions"][0].update(created_at=float("nan")), "no tag covers"),
        (lambda d: [d.pop(k) for k in ("format", "binding", "tag")], "is not sealed"),
    ],
    ids=["edited", "non-ascii-record-tag", "non-ascii-file-tag", "nan", "made-plain"],
)
def test_a_sealed_versions_file_refuses_every_edit_with_our_error(
    tmp_path: Path, keys: KeyRing, change: Any, match: str
) -> None:
    from rehearsal.governance.versions import VersionsSeal, read_versions, start_sealed

    seal = VersionsSeal(keys, "deployment:one")
    memory = RehearsalMemory.create(tmp_path / "d" / "mem", keys=keys, dim=4, encoder_name="test-encoder")
    memory.add(["a"], vectors=np.eye(4, dtype=np.float32)[:1])
    start_sealed(memory.path, seal)
    (tmp_path / "d" / "weights" / "w1").mkdir(parents=True)
    record_version(memory, weights=str(tmp_path / "d" / "weights" / "w1"), config={}, seal=seal)
    assert read_versions(memory.path, seal=seal).versions[0].weights == str(tmp_path / "d" / "weights" / "w1")
    with pytest.raises(IntegrityError, match="belongs to 'deployment:one'"):
        read_versions(memory.path, seal=VersionsSeal(keys, "deployment:two"))
    with pytest.raises(ValidationError, match="outside"):
        record_version(memory, weights=str(tmp_path / "elsewhere"), config={}, seal=seal)
    path = memory.path / "versions.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    with pytest.raises(IntegrityError, match=match):
        read_versions(memory.path, seal=seal)
    with pytest.raises(IntegrityError, match=match):
        rollback(memory, 1, seal=seal)
    memory.close()
