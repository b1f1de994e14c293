"""A version-1 memory (written by the format-1 code: tests/data/make_v1_store.py) opens, migrates to
format 2 and answers what it answered before (issue 13)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from rehearsal import KeyRing, RehearsalMemory
from rehearsal.errors import StoreFormatError
from rehearsal.store.layout import FORMAT_VERSION, acquire_writer_lock

FIXTURE = Path(__file__).parent / "data" / "v1_store"
TEST_KEY = KeyRing.from_bytes(bytes(range(32)))  # the fixture's test key, never a real one
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())
QUERIES = np.asarray(EXPECTED["queries"], dtype=np.float32)


def _copy(name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copytree(FIXTURE / name, target)
    return target


def _format(path: Path) -> tuple[int, int]:
    """(memory.json's format, the catalog's: 1 when it has no format key)."""
    conn = sqlite3.connect(path / "memory.sqlite")
    row = conn.execute("SELECT value FROM mem_meta WHERE key = 'format'").fetchone()
    conn.close()
    return json.loads((path / "memory.json").read_text())["format"], int(row[0]) if row else 1


def test_the_fixture_is_format_1() -> None:
    assert _format(FIXTURE / "encrypted") == (1, 1)
    assert _format(FIXTURE / "plain") == (1, 1)


@pytest.mark.parametrize("read_only", [False, True])
def test_an_encrypted_version_1_store_migrates_and_answers_the_same(tmp_path: Path, read_only: bool) -> None:
    path = _copy("encrypted", tmp_path)
    expected = EXPECTED["encrypted"]
    with RehearsalMemory.open(path, keys=TEST_KEY, read_only=read_only) as mem:
        assert len(mem) == expected["len"]
        assert mem.generation == expected["generation"]
        assert [[h.id for h in row] for row in mem.search_vectors(QUERIES, 5)] == expected["search"]
        bob = mem.search_vectors(QUERIES, 5, where={"tenant": "bob"})
        assert [[h.id for h in row] for row in bob] == expected["search_bob"]
        assert mem.get_texts([0, 5, 20]) == expected["texts"]
        labels = {str(i): r.label for i, r in mem.entries(list(range(24))).items()}
        assert labels == expected["labels"]
        counts = mem.verify()
    assert counts["metadata"] == expected["len"]
    assert counts["metadata_keyed"] == 1
    assert _format(path) == (FORMAT_VERSION, FORMAT_VERSION)
    conn = sqlite3.connect(path / "memory.sqlite")
    widths = {len(blob) for (blob,) in conn.execute("SELECT vector FROM entries")}
    conn.close()
    assert widths == {1 + 4 + 12 + 8 * 2 + 16}  # sealed float16 (format 1 sealed float32)


def test_a_migrated_store_keeps_taking_writes(tmp_path: Path, rng: np.random.Generator) -> None:
    path = _copy("encrypted", tmp_path)
    with RehearsalMemory.open(path, keys=TEST_KEY) as mem:
        x = rng.standard_normal((2, 8)).astype(np.float32)
        ids = mem.add(
            ["new a", "new b"], vectors=x / np.linalg.norm(x, axis=1, keepdims=True), tenant="carol"
        )
        mem.forget(tenant="alice")
    with RehearsalMemory.open(path, keys=TEST_KEY, read_only=True) as mem:
        assert mem.get_texts(ids) == ["new a", "new b"]
        assert len(mem) == EXPECTED["encrypted"]["len"] + 2 - 11  # alice owned ids 0..11 but 3
        mem.verify()


def test_a_version_1_store_without_keys_migrates_and_answers_the_same(tmp_path: Path) -> None:
    path = _copy("plain", tmp_path)
    expected = EXPECTED["plain"]
    with RehearsalMemory.open(path) as mem:
        assert len(mem) == expected["len"]
        assert mem.generation == expected["generation"]
        assert [[h.id for h in row] for row in mem.search_vectors(QUERIES, 5)] == expected["search"]
        labels = {str(i): r.label for i, r in mem.entries(list(range(24))).items()}
        assert labels == expected["labels"]
        assert mem.verify()["metadata_keyed"] == 0
    assert _format(path) == (FORMAT_VERSION, FORMAT_VERSION)


def test_a_version_1_store_held_by_a_writer_is_not_read_half_migrated(tmp_path: Path) -> None:
    path = _copy("encrypted", tmp_path)
    fd = acquire_writer_lock(path)  # a format-1 writer still has it open
    try:
        with pytest.raises(StoreFormatError, match="format 1 and a writer holds it"):
            RehearsalMemory.open(path, keys=TEST_KEY, read_only=True)
    finally:
        os.close(fd)
    assert _format(path) == (1, 1)
