"""An external anchor against a whole-folder rollback (issue 28): a memory folder put back whole from an
older copy (store, head and audit log together) is consistent inside and opens; the anchor the user kept
elsewhere refuses it, through ``open(..., anchor=...)``, ``--anchor`` and ``audit verify --anchor``."""

from __future__ import annotations

import io
import json
import shutil
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
from conftest import MEMORY_DIM, unit_vectors

from rehearsal.cli.main import main
from rehearsal.crypto.keys import KeyRing
from rehearsal.errors import IntegrityError
from rehearsal.governance.audit_log import AuditLog, default_log_path
from rehearsal.governance.audited import AuditedMemory
from rehearsal.memory.anchor import Anchor, read_anchor, write_anchor
from rehearsal.memory.facade import RehearsalMemory

OLDER = "older than its anchor"


def _add(folder: Path, keys: KeyRing, texts: list[str], *, seed: int) -> None:
    """Add ``texts`` through the audited path, so the memory and its log stay in step."""
    with RehearsalMemory.open(folder, keys=keys) as memory:
        audited = AuditedMemory(memory, AuditLog.open(default_log_path(folder), keys), actor="test")
        audited.add(texts, vectors=unit_vectors(np.random.default_rng(seed), len(texts)))


def _memory(tmp_path: Path, keys: KeyRing) -> Path:
    folder = tmp_path / "mem"
    RehearsalMemory.create(folder, keys=keys, dim=MEMORY_DIM, encoder_name="synthetic").close()
    _add(folder, keys, ["first", "second"], seed=0)
    return folder


def _roll_back(folder: Path, backup: Path) -> None:
    shutil.rmtree(folder)
    shutil.copytree(backup, folder)


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        status = main(argv)
    return status, out.getvalue(), err.getvalue()


def test_a_folder_put_back_whole_opens_but_not_past_its_anchor(tmp_path: Path, keys: KeyRing) -> None:
    folder = _memory(tmp_path, keys)
    backup = tmp_path / "backup"
    shutil.copytree(folder, backup)
    _add(folder, keys, ["third"], seed=1)
    anchor = tmp_path / "elsewhere" / "anchor.json"
    anchor.parent.mkdir()
    with RehearsalMemory.open(folder, keys=keys, read_only=True) as memory:
        write_anchor(anchor, Anchor(memory.store_id, memory.generation), keys)
    _add(folder, keys, ["fourth"], seed=2)
    with RehearsalMemory.open(folder, keys=keys, anchor=anchor) as memory:  # newer than its anchor: fine
        assert len(memory) == 4
    _roll_back(folder, backup)
    with RehearsalMemory.open(folder, keys=keys, read_only=True) as memory:
        assert len(memory) == 2  # consistent inside: nothing in the folder can tell
    for read_only in (True, False):
        with pytest.raises(IntegrityError, match=OLDER):
            RehearsalMemory.open(folder, keys=keys, read_only=read_only, anchor=anchor)
    with RehearsalMemory.open(folder, keys=keys) as memory:  # the refused writer released its lock
        assert memory.generation >= 0


def test_an_anchor_edited_or_of_another_memory_is_refused(tmp_path: Path, keys: KeyRing) -> None:
    folder = _memory(tmp_path, keys)
    anchor = tmp_path / "anchor.json"
    with RehearsalMemory.open(folder, keys=keys, read_only=True) as memory:
        write_anchor(anchor, Anchor(memory.store_id, memory.generation), keys)
    data = json.loads(anchor.read_text())
    anchor.write_text(json.dumps({**data, "generation": 0}))
    with pytest.raises(IntegrityError, match="fails its check"):
        read_anchor(anchor, keys)
    other = tmp_path / "other"
    RehearsalMemory.create(other, keys=keys, dim=MEMORY_DIM, encoder_name="synthetic").close()
    with RehearsalMemory.open(other, keys=keys, read_only=True) as memory:
        write_anchor(anchor, Anchor(memory.store_id, memory.generation), keys)
    with pytest.raises(IntegrityError, match="the anchor names memory"):
        RehearsalMemory.open(folder, keys=keys, read_only=True, anchor=anchor)


def test_the_cli_anchors_and_refuses_a_rolled_back_folder_and_log(tmp_path: Path, keys: KeyRing) -> None:
    folder = _memory(tmp_path, keys)
    keys.to_file(tmp_path / "key")
    key = ["--key-file", str(tmp_path / "key")]
    backup = tmp_path / "backup"
    shutil.copytree(folder, backup)
    _add(folder, keys, ["third"], seed=1)
    anchor = str(tmp_path / "anchor.json")
    status, out, err = _run(["audit", "anchor", str(folder), "--out", anchor, "--json", *key])
    assert status == 0, err
    assert json.loads(out)["audit_seq"] is not None
    status, _, err = _run(["audit", "verify", str(folder), "--anchor", anchor, *key])
    assert status == 0, err
    _roll_back(folder, backup)
    for argv in (["audit", "verify", str(folder)], ["peek", str(folder)]):
        status, _, err = _run([*argv, "--anchor", anchor, *key])
        assert status == 1
        assert err.strip().startswith("rehearsal: error: ")
        assert OLDER in err
        assert len(err.strip().splitlines()) == 1
    # The log alone put back (the memory kept): audit verify refuses it by the anchor's entry.
    shutil.rmtree(folder)
    shutil.copytree(backup, folder)
    _add(folder, keys, ["another third"], seed=3)
    status, _, err = _run(["audit", "verify", str(folder), "--anchor", anchor, *key])
    assert status == 1
    assert "not the one the anchor recorded" in err
