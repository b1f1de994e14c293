"""ReplaySelector on a real encrypted memory with seeded synthetic vectors."""

from __future__ import annotations

import numpy as np
import pytest

from rehearsal.config import ReplayConfig
from rehearsal.crypto.keys import KeyRing
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.replay.selector import ReplaySelector

DIM = 16


def _unit(rng: np.random.Generator, n: int, centre: np.ndarray | None = None) -> np.ndarray:
    base = rng.normal(size=(n, DIM)).astype(np.float32)
    if centre is not None:
        base = base * 0.1 + centre
    return base / np.linalg.norm(base, axis=1, keepdims=True)


@pytest.fixture
def memory(tmp_path):
    """Three old tasks, each a tight cluster with two labels, and entries of the current task 'd'."""
    rng = np.random.default_rng(0)
    mem = RehearsalMemory.create(tmp_path / "m", keys=KeyRing.generate(), dim=DIM, encoder_name="synthetic")
    centres = _unit(rng, 4)
    for t, task in enumerate("abcd"):
        vectors = _unit(rng, 40, centres[t])
        meta = [{"task": task, "label": 2 * t + (i % 2)} for i in range(40)]
        mem.add([f"{task} example {i}" for i in range(40)], vectors=vectors, metadata=meta)
    mem.centres = centres  # type: ignore[attr-defined]
    yield mem
    mem.close()


def test_retrieval_returns_nearest_old_task(memory):
    rng = np.random.default_rng(1)
    batch = _unit(rng, 8, memory.centres[1])
    selector = ReplaySelector(memory, ReplayConfig(mode="retrieval", k=4), eligible={"task": {"$ne": "d"}})
    choice = selector.select(batch, 8, rng=np.random.default_rng(2))
    assert len(choice) == 8
    assert {choice.metadata[i]["task"] for i in choice.ids} == {"b"}
    assert all(s > 0.5 for s in choice.scores)


def test_replay_never_contains_the_current_task(memory):
    batch = _unit(np.random.default_rng(3), 16, memory.centres[3])
    for mode in ("retrieval", "random", "hybrid"):
        selector = ReplaySelector(memory, ReplayConfig(mode=mode, k=8), eligible={"task": {"$ne": "d"}})
        choice = selector.select(batch, 24, rng=np.random.default_rng(4))
        assert len(choice) == 24
        assert all(choice.metadata[i]["task"] != "d" for i in choice.ids)


def test_replay_skips_the_batch_own_stored_examples(memory):
    own_ids = memory.ids({"task": "a"})[:8]
    own = memory._vectors.load_all()
    ids, vectors = own
    batch = vectors[np.isin(ids, own_ids)]
    selector = ReplaySelector(memory, ReplayConfig(mode="retrieval", k=4))
    choice = selector.select(batch, 8, rng=np.random.default_rng(0))
    assert not set(choice.ids) & set(own_ids)


def test_hybrid_covers_far_tasks(memory):
    batch = _unit(np.random.default_rng(5), 8, memory.centres[0])
    selector = ReplaySelector(
        memory, ReplayConfig(mode="hybrid", random_share=0.5, k=4), eligible={"task": {"$ne": "d"}}
    )
    choice = selector.select(batch, 24, rng=np.random.default_rng(6))
    tasks = {choice.metadata[i]["task"] for i in choice.ids}
    assert tasks == {"a", "b", "c"}
    # Plain retrieval, by contrast, only ever replays the nearest task.
    retrieval_only = ReplaySelector(
        memory, ReplayConfig(mode="retrieval", k=8), eligible={"task": {"$ne": "d"}}
    )
    nearest = retrieval_only.select(batch, 16, rng=np.random.default_rng(6))
    assert {m["task"] for m in nearest.metadata.values()} == {"a"}


def test_class_balanced_random_share_draws_every_label(memory):
    selector = ReplaySelector(
        memory, ReplayConfig(mode="random", balance="class"), eligible={"task": {"$ne": "d"}}
    )
    choice = selector.select(_unit(np.random.default_rng(7), 4), 60, rng=np.random.default_rng(8))
    labels = [choice.metadata[i]["label"] for i in choice.ids]
    counts = np.bincount(labels, minlength=6)
    assert counts.min() >= 5  # 6 labels, 60 draws: balanced within sampling noise


def test_same_seed_same_replay(memory):
    batch = _unit(np.random.default_rng(9), 8)
    selector = ReplaySelector(memory, ReplayConfig(mode="hybrid", k=4))
    first = selector.select(batch, 12, rng=np.random.default_rng(10)).ids
    second = ReplaySelector(memory, ReplayConfig(mode="hybrid", k=4)).select(
        batch, 12, rng=np.random.default_rng(10)
    )
    assert first == second.ids
    other = selector.select(batch, 12, rng=np.random.default_rng(11)).ids
    assert other != first


def test_replay_ids_are_distinct(memory):
    batch = np.repeat(_unit(np.random.default_rng(12), 1), 8, axis=0)
    choice = ReplaySelector(memory, ReplayConfig(mode="retrieval", k=16)).select(
        batch, 16, rng=np.random.default_rng(0)
    )
    assert len(set(choice.ids)) == len(choice.ids) == 16


def test_empty_memory_gives_no_replay(tmp_path):
    mem = RehearsalMemory.create(tmp_path / "e", keys=KeyRing.generate(), dim=DIM, encoder_name="synthetic")
    choice = ReplaySelector(mem, ReplayConfig()).select(
        _unit(np.random.default_rng(0), 4), 8, rng=np.random.default_rng(0)
    )
    assert len(choice) == 0
    mem.close()


def test_replay_search_leaves_torch_thread_count_alone(memory):
    import torch

    before = torch.get_num_threads()
    selector = ReplaySelector(memory, ReplayConfig(mode="retrieval", k=4, search_threads=1))
    selector.select(_unit(np.random.default_rng(13), 8), 8, rng=np.random.default_rng(0))
    assert torch.get_num_threads() == before
