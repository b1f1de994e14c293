"""Values a memory must refuse with a ValidationError before anything is written (not an OverflowError,
TypeError or a warning from a layer below)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rehearsal import KeyRing, RehearsalMemory, ValidationError

DIM = 8
TOO_BIG = 1 << 70


@pytest.fixture
def mem(tmp_path: Path, keys: KeyRing) -> RehearsalMemory:
    memory = RehearsalMemory.create(tmp_path / "mem", keys=keys, dim=DIM, encoder_name="synthetic-8")
    memory.add(["one", "two"], vectors=np.eye(2, DIM, dtype=np.float32), metadata=[{"label": 1}] * 2)
    return memory


def test_a_lone_surrogate_in_a_text_is_refused_at_add(mem: RehearsalMemory) -> None:
    with pytest.raises(ValidationError, match=r"texts\[0\] is not valid Unicode text"):
        mem.add(["broken \ud800"], vectors=np.eye(1, DIM, dtype=np.float32))
    assert len(mem) == 2


def test_a_lone_surrogate_in_metadata_is_refused_at_add(mem: RehearsalMemory) -> None:
    with pytest.raises(ValidationError, match=r"metadata\[0\] is not valid Unicode text"):
        mem.add(["fine"], vectors=np.eye(1, DIM, dtype=np.float32), metadata=[{"task": "t\udc80"}])
    assert len(mem) == 2


def test_a_label_past_int64_is_refused_at_add(mem: RehearsalMemory) -> None:
    with pytest.raises(ValidationError, match="signed 64-bit"):
        mem.add(["fine"], vectors=np.eye(1, DIM, dtype=np.float32), metadata=[{"label": TOO_BIG}])
    assert len(mem) == 2


@pytest.mark.parametrize("where", [{"label": TOO_BIG}, {"label": {"$in": [1, -TOO_BIG]}}, {"id": TOO_BIG}])
def test_a_filter_value_past_int64_is_refused(mem: RehearsalMemory, where: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match="signed 64-bit"):
        mem.search_vectors(np.eye(1, DIM, dtype=np.float32), 2, where=where)


@pytest.mark.parametrize("call", ["delete", "get_texts", "entries"])
def test_an_id_past_int64_is_refused(mem: RehearsalMemory, call: str) -> None:
    with pytest.raises(ValidationError, match="signed 64-bit"):
        getattr(mem, call)([0, TOO_BIG])
    assert len(mem) == 2


def test_complex_vectors_are_refused(mem: RehearsalMemory) -> None:
    vectors = np.eye(1, DIM, dtype=np.complex64) * (1 + 1j)
    with pytest.raises(ValidationError, match="must be real"):
        mem.add(["fine"], vectors=vectors)
    assert len(mem) == 2


def test_bench_and_search_clamp_a_huge_k_to_the_memory(mem: RehearsalMemory) -> None:
    report = mem.bench(queries=10**9, k=10**9)
    assert (report["k"], report["queries"]) == (2, 2)
    assert len(mem.search_vectors(np.eye(1, DIM, dtype=np.float32), 10**12)[0]) == 2
