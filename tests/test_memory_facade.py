"""The facade over the store protocols: what it adds on top of them (readers, bench, threads, where)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from rehearsal.errors import ConfigError, ReadOnlyError
from rehearsal.memory.facade import RehearsalMemory


def test_verify_counts_every_store(filled_memory: RehearsalMemory) -> None:
    assert filled_memory.verify() == {
        "entries": 60,
        "texts": 60,
        "vectors": 60,
        "metadata": 60,
        "metadata_keyed": 1,
        "generation": 3,
    }


def test_where_reaches_the_records_as_a_tree(filled_memory: RehearsalMemory) -> None:
    assert filled_memory.ids({"task": "b", "label": 3}) == list(range(21, 40, 2))
    assert sorted(filled_memory.group_ids("tenant")) == ["acme", "globex"]


def test_a_reader_is_a_separate_read_only_handle(filled_memory: RehearsalMemory) -> None:
    opener = pickle.loads(pickle.dumps(filled_memory.reader()))
    with opener() as reader:
        assert reader.read_only
        assert len(reader) == 60
        assert reader.get_texts([0]) == filled_memory.get_texts([0])
        with pytest.raises(ReadOnlyError):
            reader.delete([0])


def test_threads_leave_the_results_unchanged(filled_memory: RehearsalMemory) -> None:
    queries = np.random.default_rng(5).standard_normal((3, filled_memory.dim)).astype(np.float32)
    plain = filled_memory.search_vectors(queries, 5)
    threaded = filled_memory.search_vectors(queries, 5, threads=1)
    assert [[h.id for h in row] for row in plain] == [[h.id for h in row] for row in threaded]


def test_bench_measures_the_memory_against_exact_search(filled_memory: RehearsalMemory) -> None:
    report = filled_memory.bench(queries=10, k=5, seed=0)
    assert report["entries"] == 60
    assert report["recall_at_k"] >= 0.95  # a flat index at 60 entries is exact


def test_an_unknown_url_scheme_is_refused() -> None:
    with pytest.raises(ConfigError, match="no memory backend for 'milvus' URLs"):
        RehearsalMemory.open("milvus://localhost:19530/memory")
