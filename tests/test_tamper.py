"""Tampering with a memory's files: each case ends in a correct answer or our own error, never silently
different results. (The cases that need the version-2 format, issue 13 items 2, 3, 6 and 10, are not here.)"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from rehearsal import IntegrityError, KeyRing, RehearsalMemory

DIM = 16


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _make(path: Path, keys: KeyRing | None, vectors: np.ndarray) -> None:
    with RehearsalMemory.create(
        path, keys=keys, embedding_only=True, dim=DIM, encoder_name="synthetic-16"
    ) as mem:
        n = len(vectors)
        mem.add(
            vectors=vectors,
            metadata=[{"label": i % 3} for i in range(n)],
            sources=[f"s{i}" for i in range(n)],
        )


@pytest.fixture
def planted(tmp_path: Path, keys: KeyRing, rng: np.random.Generator) -> Path:
    """An encrypted store whose index.snap was replaced by an unencrypted store's (no key needed)."""
    _make(tmp_path / "sealed", keys, _unit(rng, 20))
    _make(tmp_path / "plain", None, _unit(rng, 20))
    shutil.copyfile(tmp_path / "plain" / "index.snap", tmp_path / "sealed" / "index.snap")
    return tmp_path / "sealed"


@pytest.mark.parametrize("read_only", [False, True])
def test_unsealed_snapshot_in_an_encrypted_store_is_refused(
    planted: Path, keys: KeyRing, read_only: bool
) -> None:
    with pytest.raises(IntegrityError, match="not sealed"):
        RehearsalMemory.open(planted, keys=keys, read_only=read_only)
