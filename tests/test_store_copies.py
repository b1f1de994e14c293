"""Copies of one folder store are told apart (issue 28): every commit record carries a fresh nonce that the
head file records too, so a database from another copy of the store (a deployment's memory, copied from
the same source as another deployment's) at the same generation and count is refused, not read as this
folder's. A head file written before nonces still opens, and a writer's open rewrites it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import MEMORY_DIM, unit_vectors

from rehearsal.crypto.keys import KeyRing
from rehearsal.errors import IntegrityError
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.store.sqlite.head import HEAD_FILE

OLD_SLOT = 40  # bytes per slot of a head file written before nonces


def _two_copies(tmp_path: Path, keys: KeyRing) -> tuple[Path, Path]:
    """Folders ``a`` and ``b``: one memory copied, then one different add in each (same generation and
    count, other entries)."""
    rng = np.random.default_rng(0)
    a, b = tmp_path / "a", tmp_path / "b"
    with RehearsalMemory.create(a, keys=keys, dim=MEMORY_DIM, encoder_name="synthetic") as memory:
        memory.add(["shared 0", "shared 1"], vectors=unit_vectors(rng, 2))
    shutil.copytree(a, b)
    for folder, text in ((a, "only in a"), (b, "only in b")):
        with RehearsalMemory.open(folder, keys=keys) as memory:
            memory.add([text], vectors=unit_vectors(rng, 1), metadata=[{"task": text}])
    return a, b


def test_a_database_from_another_copy_of_the_store_is_refused(tmp_path: Path, keys: KeyRing) -> None:
    a, b = _two_copies(tmp_path, keys)
    with (
        RehearsalMemory.open(a, keys=keys, read_only=True) as mine,
        RehearsalMemory.open(b, keys=keys, read_only=True) as theirs,
    ):
        assert (mine.generation, len(mine)) == (theirs.generation, len(theirs))
    shutil.copyfile(b / "memory.sqlite", a / "memory.sqlite")
    for read_only in (True, False):
        with pytest.raises(IntegrityError, match="comes from another copy of this store"):
            RehearsalMemory.open(a, keys=keys, read_only=read_only)


def test_a_head_file_from_another_copy_is_refused(tmp_path: Path, keys: KeyRing) -> None:
    a, b = _two_copies(tmp_path, keys)
    shutil.copyfile(b / HEAD_FILE, a / HEAD_FILE)
    with pytest.raises(IntegrityError, match="comes from another copy of this store"):
        RehearsalMemory.open(a, keys=keys, read_only=True)


def _write_old_head(folder: Path, keys: KeyRing) -> None:
    """The head file as the format before nonces wrote it: (magic, generation, count, tag) twice."""
    import struct

    with RehearsalMemory.open(folder, keys=keys, read_only=True) as memory:
        generation, count = memory.generation, len(memory)
        auth = memory._records.auth  # type: ignore[attr-defined]  # the store's own tagger
    slot = struct.pack(">8sQQ16s", b"RHGEN002", generation, count, auth.head_tag(generation, count))
    (folder / HEAD_FILE).write_bytes(slot + slot)


def test_a_head_file_from_before_nonces_still_opens_and_a_writer_rewrites_it(
    tmp_path: Path, keys: KeyRing
) -> None:
    a, _ = _two_copies(tmp_path, keys)
    _write_old_head(a, keys)
    with RehearsalMemory.open(a, keys=keys, read_only=True) as memory:
        assert memory.get_texts(memory.ids()) == ["shared 0", "shared 1", "only in a"]
    assert (a / HEAD_FILE).stat().st_size == 2 * OLD_SLOT
    with RehearsalMemory.open(a, keys=keys) as memory:
        assert len(memory) == 3
    assert (a / HEAD_FILE).stat().st_size > 2 * OLD_SLOT  # rewritten with the commit's nonce
    with RehearsalMemory.open(a, keys=keys, read_only=True) as memory:
        memory.verify()
