"""Filtered search as replay uses it: the same filter on every step, answered from a cache that must
follow every change of the memory, and a k that can never allocate more than the memory holds."""

from __future__ import annotations

import numpy as np
import pytest

import rehearsal as rh

DIM = 16


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def memory(tmp_path, keys):
    rng = np.random.default_rng(0)
    mem = rh.RehearsalMemory.create(tmp_path / "m", keys=keys, dim=DIM, encoder_name="test-vectors")
    vectors = _unit(rng.normal(size=(30, DIM)))
    mem.add(
        [f"text {i}" for i in range(30)],
        metadata=[{"task": "old" if i % 3 else "new", "label": i % 5} for i in range(30)],
        vectors=vectors,
    )
    yield mem
    mem.close()


def _ids(hits: list[list[rh.Hit]]) -> set[int]:
    return {hit.id for row in hits for hit in row}


def test_a_huge_k_returns_every_entry_without_allocating_for_k(memory) -> None:
    query = _unit(np.ones((2, DIM)))
    hits = memory.search_vectors(query, 10**12)
    assert [len(row) for row in hits] == [30, 30]
    filtered = memory.search_vectors(query, 10**12, where={"task": "new"})
    assert [len(row) for row in filtered] == [10, 10]


def test_the_same_filter_follows_adds_and_deletes(memory) -> None:
    where = {"task": {"$ne": "new"}}
    query = _unit(np.ones((1, DIM)))
    before = _ids(memory.search_vectors(query, 100, where=where))
    assert len(before) == 20
    assert memory.search_vectors(query, 100, where=where)[0][0].id in before  # the cached answer
    added = memory.add(["another old one"], metadata=[{"task": "old"}], vectors=query)
    after = _ids(memory.search_vectors(query, 100, where=where))
    assert after == before | set(added)
    memory.delete(sorted(before)[:5])
    assert _ids(memory.search_vectors(query, 100, where=where)) == (before | set(added)) - set(
        sorted(before)[:5]
    )
    # Another filter is not answered from the first one's cache.
    assert _ids(memory.search_vectors(query, 100, where={"task": "new"})) == {
        i for i in range(30) if i % 3 == 0
    }
