"""A full disk and a failing close: our own errors, nothing acknowledged lost, no lock or temp file left."""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rehearsal import KeyRing, RehearsalMemory, StorageError
from rehearsal.cli.main import KEY_ENV, main
from rehearsal.governance.audit_log import AuditLog

DIM = 16


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _memory(path: Path, keys: KeyRing, rng: np.random.Generator, n: int = 10) -> RehearsalMemory:
    mem = RehearsalMemory.create(path, keys=keys, dim=DIM, encoder_name="synthetic-16")
    mem.add([f"record {i}" for i in range(n)], vectors=_unit(rng, n), tenant="acme")
    return mem


def _no_space(*args: Any, **kwargs: Any) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_failed_close_still_releases_the_writer_lock(
    tmp_path: Path, keys: KeyRing, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    mem = _memory(tmp_path / "mem", keys, rng)
    monkeypatch.setattr(mem._vectors, "checkpoint", _no_space)
    with pytest.raises(StorageError, match="index snapshot at close"):
        mem.close()
    with RehearsalMemory.open(tmp_path / "mem", keys=keys) as again:  # not StoreLockedError
        assert len(again) == 10


def test_a_full_database_is_a_storage_error_and_changes_nothing(
    tmp_path: Path, keys: KeyRing, rng: np.random.Generator
) -> None:
    mem = _memory(tmp_path / "mem", keys, rng)
    # SQLite's own page limit gives the real SQLITE_FULL ("database or disk is full").
    pages = mem._records.conn.execute("PRAGMA page_count").fetchone()[0]  # type: ignore[attr-defined]
    mem._records.conn.execute(f"PRAGMA max_page_count = {pages}")  # type: ignore[attr-defined]
    with pytest.raises(StorageError, match="disk is full"):
        mem.add(["x" * 5000] * 200, vectors=_unit(rng, 200), tenant="acme")
    assert len(mem) == 10
    mem.close()
    with RehearsalMemory.open(tmp_path / "mem", keys=keys) as again:
        assert len(again) == 10
        again.verify()


def test_a_failed_audit_head_write_leaves_no_temp_file(
    tmp_path: Path, keys: KeyRing, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = AuditLog.open(tmp_path / "audit.log", keys)
    monkeypatch.setattr(os, "replace", _no_space)
    with pytest.raises(StorageError, match="No space left"):
        log.append("ingest", {"count": 1})
    assert not list(tmp_path.glob(".*.tmp-*"))


def test_the_cli_reports_a_full_disk_in_one_line(
    tmp_path: Path,
    keys: KeyRing,
    rng: np.random.Generator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _memory(tmp_path / "mem", keys, rng).close()
    monkeypatch.setenv(KEY_ENV, keys.export_base64())
    assert main(["delete", str(tmp_path / "mem"), "--ids", "0"]) == 0  # the log exists now

    def full(*args: Any, **kwargs: Any) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr("rehearsal.memory.facade.commit", full)
    assert main(["delete", str(tmp_path / "mem"), "--ids", "1"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "disk is full" in err
    assert not list((tmp_path / "mem").glob(".*.tmp-*"))


def test_a_full_disk_at_open_is_named_as_such_not_as_damage(tmp_path, monkeypatch):
    """Opening writes the WAL index; with no space left SQLite says "disk I/O error", which must read
    as a storage problem (is the disk full?), not as a damaged database."""
    import sqlite3

    from rehearsal.errors import StorageError, StoreFormatError
    from rehearsal.store.sqlite import connection

    real_connect = sqlite3.connect

    class FullDisk:
        def __init__(self, conn):
            self.conn = conn

        def execute(self, sql, *args):
            if sql.startswith("PRAGMA journal_mode"):
                raise sqlite3.OperationalError("disk I/O error")
            return self.conn.execute(sql, *args)

        def close(self):
            self.conn.close()

    monkeypatch.setattr(connection.sqlite3, "connect", lambda *a, **k: FullDisk(real_connect(*a, **k)))
    with pytest.raises(StorageError, match="disk full") as caught:
        connection.connect(tmp_path / "x.sqlite", read_only=False, what="memory")
    assert not isinstance(caught.value, StoreFormatError)
