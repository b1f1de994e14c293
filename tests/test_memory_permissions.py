"""A memory's folder is owner-only (0700) and its files 0600, whatever the umask."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from rehearsal import KeyRing, RehearsalMemory
from rehearsal.governance.audit_log import AuditLog, default_log_path
from rehearsal.governance.audited import AuditedMemory


@pytest.fixture(params=[0o000, 0o022])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_memory_folder_and_its_files_are_owner_only(umask: int, tmp_path: Path, keys: KeyRing) -> None:
    path = tmp_path / "mem"
    memory = RehearsalMemory.create(path, keys=keys, dim=8, encoder_name="synthetic-8")
    with AuditedMemory(memory, AuditLog.open(default_log_path(path), keys)) as audited:
        audited.add(["one", "two"], vectors=np.eye(2, 8, dtype=np.float32))
        # While open: the WAL and shared-memory files exist too.
        modes = {p.name: _mode(p) for p in path.iterdir()}
    assert {"memory.sqlite-wal", "memory.sqlite-shm", "audit.log", "audit.log.head"} <= set(modes)
    modes |= {p.name: _mode(p) for p in path.iterdir()}
    assert _mode(path) == 0o700
    assert {name: mode for name, mode in modes.items() if mode != 0o600} == {}
