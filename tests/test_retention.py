"""Retention: expiry removes exactly the records past their retain_until, from index and vault, logged."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest

from rehearsal.crypto.keys import KeyRing
from rehearsal.errors import NotFoundError, ValidationError
from rehearsal.governance.audit_log import AuditLog, default_log_path
from rehearsal.governance.retention import expire, expired_ids, parse_now, retention_deadline
from rehearsal.memory.facade import RehearsalMemory

DIM = 8
# (retain_until, expired at NOW?)
PLAN = [
    ("2024-06-10", True),
    (None, False),
    ("2024-06-11", False),  # a date is kept through that whole day
    ("2024-06-12", False),
    ("2023-01-01", True),
    ("2024-06-11T08:00:00Z", True),
    ("2024-06-11T12:00:00+00:00", False),
    (None, False),
    ("2030-01-01", False),
    ("2024-06-01", True),
]
NOW = "2024-06-11T10:00:00Z"


def build(path: Path, keys: KeyRing) -> tuple[RehearsalMemory, list[int], np.ndarray]:
    memory = RehearsalMemory.create(path, keys=keys, dim=DIM, encoder_name="test-encoder")
    vectors = np.random.default_rng(1).normal(size=(len(PLAN), DIM)).astype(np.float32)
    metadata = [{"task": "t"} if until is None else {"task": "t", "retain_until": until} for until, _ in PLAN]
    ids = memory.add([f"record {i}" for i in range(len(PLAN))], metadata=metadata, vectors=vectors)
    return memory, ids, vectors


def test_expiry_removes_exactly_the_expired_records(tmp_path: Path, keys: KeyRing) -> None:
    memory, ids, vectors = build(tmp_path / "mem", keys)
    expected = [i for i, (_, gone) in zip(ids, PLAN, strict=True) if gone]
    kept = [i for i in ids if i not in expected]
    assert expired_ids(memory, now=NOW) == expected
    assert expire(memory, now=NOW) == expected
    assert memory.ids() == kept
    hits = memory.search_vectors(vectors, k=len(PLAN))
    assert {h.id for row in hits for h in row} == set(kept)
    assert memory.texts_by_id(ids) == {i: f"record {ids.index(i)}" for i in kept}
    with pytest.raises(NotFoundError, match="no text for ids"):
        memory.get_texts(expected[:1])
    assert memory.verify()["entries"] == len(kept)
    memory.close()


def test_expiry_is_logged_with_ids_and_no_text(tmp_path: Path, keys: KeyRing) -> None:
    memory, _ids, _ = build(tmp_path / "mem", keys)
    log = AuditLog.open(default_log_path(memory.path), keys)
    removed = expire(memory, now=NOW, log=log, actor="retention-job")
    memory.close()
    (entry,) = log.entries()
    assert (entry.kind, entry.actor, entry.details["ids"], entry.details["count"]) == (
        "expire",
        "retention-job",
        removed,
        len(removed),
    )
    assert entry.details["now"] == "2024-06-11T10:00:00Z"
    assert b"record" not in log.path.read_bytes()


def test_dry_run_changes_nothing(tmp_path: Path, keys: KeyRing) -> None:
    memory, ids, _ = build(tmp_path / "mem", keys)
    log = AuditLog.open(tmp_path / "audit.log", keys)
    assert len(expire(memory, now=NOW, log=log, dry_run=True)) == 4
    assert memory.ids() == ids
    assert log.verify() == 0
    memory.close()


def test_nothing_expires_before_any_deadline(tmp_path: Path, keys: KeyRing) -> None:
    memory, ids, _ = build(tmp_path / "mem", keys)
    assert expire(memory, now=dt.date(2020, 1, 1)) == []
    assert memory.ids() == ids
    memory.close()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (20240611, "must be an ISO date string"),
        ("11/06/2024", "not an ISO date"),
        ("2024-06-11T10:00", "timezone"),
    ],
)
def test_bad_retention_values_are_named(value: object, message: str) -> None:
    with pytest.raises(ValidationError, match=f"retain_until of record 7 .*{message}"):
        retention_deadline(value, record=7)


def test_now_must_be_a_date_or_aware_datetime() -> None:
    assert parse_now("2024-06-11") == dt.datetime(2024, 6, 11, tzinfo=dt.timezone.utc)
    with pytest.raises(ValidationError, match="'now' needs a timezone"):
        parse_now(dt.datetime(2024, 6, 11))
    with pytest.raises(ValidationError, match="'now' is not an ISO date"):
        parse_now("yesterday")


def test_cli_expire_dry_run_then_for_real(
    tmp_path: Path, keys: KeyRing, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from rehearsal.cli.main import KEY_ENV, main

    memory, ids, _ = build(tmp_path / "mem", keys)
    memory.close()
    monkeypatch.setenv(KEY_ENV, keys.export_base64())
    path = str(tmp_path / "mem")
    assert main(["expire", path, "--now", NOW, "--dry-run", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["expired"], report["entries"], report["audited"]) == ([0, 4, 5, 9], len(ids), False)
    assert main(["expire", path, "--now", NOW, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["expired"], report["entries"], report["audited"]) == ([0, 4, 5, 9], len(ids) - 4, True)
    assert main(["audit", "verify", path, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["kinds"] == {"baseline": 1, "expire": 1}
    assert main(["expire", path, "--now", "soon"]) == 1
    assert "'now' is not an ISO date" in capsys.readouterr().err
