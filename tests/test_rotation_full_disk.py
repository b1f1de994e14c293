"""Key rotation on a full disk tells the truth (issue 28): the commit is the point of truth.

The fault is injected where a full disk struck in the field: the WAL checkpoint that runs after the
rotation's COMMIT. The rotation has happened then (only the new key opens the store), so the caller is
told "rotated; cleanup failed" with our error type, and the audit log is rotated too, so that ``audit
verify`` goes on working under the new key.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from rehearsal.cli.main import KEY_ENV, main
from rehearsal.crypto.keys import KeyRing
from rehearsal.errors import CleanupError, StorageError, WrongKeyError
from rehearsal.governance.audit_log import AuditLog, default_log_path
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.store.sqlite.vault_db import VaultDatabase

DIM = 8


def _disk_full(self: VaultDatabase) -> None:
    raise sqlite3.OperationalError("database or disk is full")


def _memory(path: Path, keys: KeyRing, n: int = 4) -> list[int]:
    rng = np.random.default_rng(0)
    with RehearsalMemory.create(path, keys=keys, dim=DIM, encoder_name="test-encoder") as memory:
        return memory.add(
            [f"note {i}" for i in range(n)], vectors=rng.normal(size=(n, DIM)).astype(np.float32)
        )


def test_a_checkpoint_failing_after_the_commit_reports_a_rotation_that_happened(
    tmp_path: Path, keys: KeyRing, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = _memory(tmp_path / "mem", keys)
    new_keys = KeyRing.generate()
    memory = RehearsalMemory.open(tmp_path / "mem", keys=keys)
    with monkeypatch.context() as patch:
        patch.setattr(VaultDatabase, "checkpoint", _disk_full)
        with pytest.raises(
            CleanupError, match=r"^rotated; cleanup failed: .*database or disk is full"
        ) as err:
            memory.rotate_keys(new_keys)
        assert isinstance(err.value, StorageError)
        # A later commit whose checkpoint fails too is not reported as failed: it committed.
        memory.delete(ids[:1])
    assert memory.ids() == ids[1:]
    memory.close()
    with pytest.raises(WrongKeyError):
        RehearsalMemory.open(tmp_path / "mem", keys=keys)
    with RehearsalMemory.open(tmp_path / "mem", keys=new_keys) as reopened:
        assert reopened.texts_by_id(ids[1:]) == {i: f"note {i}" for i in ids[1:]}


def test_the_cli_says_rotated_and_leaves_the_audit_log_under_the_new_key(
    tmp_path: Path,
    keys: KeyRing,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(KEY_ENV, keys.export_base64())
    data = tmp_path / "records.jsonl"
    data.write_text("".join(json.dumps({"text": f"note {i}"}) + "\n" for i in range(3)))
    path = str(tmp_path / "mem")
    assert main(["ingest", path, str(data), "--quiet"]) == 0
    new_keys = KeyRing.generate()
    monkeypatch.setenv("NEW_KEY", new_keys.export_base64())
    capsys.readouterr()
    with monkeypatch.context() as patch:
        patch.setattr(VaultDatabase, "checkpoint", _disk_full)
        assert main(["rotate-key", path, "--new-key-env", "NEW_KEY"]) == 1
    err = capsys.readouterr().err
    assert "rotated; cleanup failed" in err
    assert "Traceback" not in err
    log = AuditLog.open(default_log_path(path), new_keys, create=False)  # its head is under the new key
    assert [e.kind for e in log.entries()][-1] == "rotate-key"
    monkeypatch.setenv(KEY_ENV, new_keys.export_base64())
    assert main(["audit", "verify", path]) == 0
    assert main(["verify", path]) == 0
    monkeypatch.setenv(KEY_ENV, keys.export_base64())
    assert main(["verify", path]) == 1  # the old key no longer opens it
