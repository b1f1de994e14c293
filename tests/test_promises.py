"""Tests that guard promises a deliberate bug once slipped past: each was seen to fail with its bug planted.

Replay never serves the task being trained (the collator's filter, the run strategies' own filter), the
uniform random share delivers the count asked for, a run's accuracy matrix scores every task against its
own labels, the PII scorer counts a finding only under its own kind, an audit entry's data digest depends
on the data, and ``rehearsal bench`` reports the recall it measured.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rehearsal as rh
from rehearsal.replay import ReplaySelector

DIM = 16
TASKS = ("old_a", "old_b", "current")
PER_TASK = 40


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def centres() -> np.ndarray:
    return _unit(np.random.default_rng(0).normal(size=(len(TASKS), DIM)))


@pytest.fixture(scope="module")
def keys() -> rh.KeyRing:
    return rh.KeyRing.generate()


@pytest.fixture(scope="module")
def mixed_memory(tmp_path_factory: pytest.TempPathFactory, keys: rh.KeyRing, centres: np.ndarray) -> Path:
    """A memory holding two old tasks and the current one: replay must choose among the old ones only."""
    rng = np.random.default_rng(1)
    path = tmp_path_factory.mktemp("mixed") / "memory"
    with rh.RehearsalMemory.create(path, keys=keys, dim=DIM, encoder_name="synthetic") as memory:
        for t, task in enumerate(TASKS):
            vectors = _unit(centres[t] + 0.1 * rng.normal(size=(PER_TASK, DIM)))
            memory.add(
                [f"{task} gloss number {i}" for i in range(PER_TASK)],
                vectors=vectors,
                metadata=[{"task": task, "label": 2 * t + i % 2} for i in range(PER_TASK)],
            )
    return path


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    from rehearsal.embedding import default_model_path

    return AutoTokenizer.from_pretrained(str(default_model_path()))


def _features(tokenizer: Any, vectors: np.ndarray, task: str) -> list[dict[str, Any]]:
    """A batch of new examples as a Trainer hands them to the collator: tokens, label, vector, text, task."""
    rows = []
    for i, vector in enumerate(vectors):
        text = f"new {task} example {i}"
        rows.append({**tokenizer(text), "label": 4, "embedding": vector.tolist(), "text": text, "task": task})
    return rows


def _near(centres: np.ndarray, task: str, n: int, seed: int) -> np.ndarray:
    """New examples close to ``task``'s stored entries (so nearest neighbours would be that task's)."""
    centre = centres[TASKS.index(task)]
    return _unit(centre + 0.1 * np.random.default_rng(seed).normal(size=(n, DIM)))


def _replayed_tasks(path: Path, keys: rh.KeyRing, ids: list[int]) -> set[str]:
    with rh.RehearsalMemory.open(path, keys=keys, read_only=True) as memory:
        return {str(row.task) for row in memory.entries(sorted(set(ids))).values()}


@pytest.mark.parametrize("mode", ["retrieval", "random", "hybrid"])
def test_collator_with_task_never_replays_that_task_from_a_memory_holding_it(
    mixed_memory: Path, keys: rh.KeyRing, tokenizer: Any, centres: np.ndarray, mode: str
) -> None:
    from transformers import DataCollatorWithPadding

    collator = rh.RehearsalCollator(
        mixed_memory,
        DataCollatorWithPadding(tokenizer),
        tokenizer,
        rh.ReplayConfig(mode=mode, ratio=0.75, k=8),
        keys=keys,
        task="current",
    )
    replayed: list[int] = []
    for seed in range(4):
        batch = collator(_features(tokenizer, _near(centres, "current", 8, seed), "current"))
        assert len(batch["input_ids"]) == 8 + 24
        replayed += collator.last_replay_ids
    assert len(replayed) == 4 * 24
    assert _replayed_tasks(mixed_memory, keys, replayed) <= {"old_a", "old_b"}


def _phase_context(
    stream: rh.TaskStream, tasks: tuple[Any, ...], memory: Path, keys: rh.KeyRing, tokenizer: Any, mode: str
) -> Any:
    from transformers import DataCollatorWithPadding

    from rehearsal.strategies.base import PhaseContext

    config = rh.RunConfig(
        tasks=[t.name for t in stream.tasks],
        replay=rh.ReplayConfig(ratio=0.75, k=8, random_share=0.5),
        progress=False,
    )
    return PhaseContext(
        config=config,
        stream=stream,
        phase=0,
        tasks=tasks,
        train=None,
        tokenizer=tokenizer,
        base_collator=DataCollatorWithPadding(tokenizer),
        memory_path=memory,
        keys=keys,
        current_classes=[],
        seen_classes=[],
    )


@pytest.mark.parametrize("method", ["random", "retrieval", "hybrid"])
@pytest.mark.parametrize("phase_tasks", [("current",), ("old_b", "current")])
def test_run_strategy_replays_none_of_the_phase_tasks(
    mixed_memory: Path,
    keys: rh.KeyRing,
    tokenizer: Any,
    centres: np.ndarray,
    method: str,
    phase_tasks: tuple[str, ...],
) -> None:
    from rehearsal.datasets import Example, Task
    from rehearsal.strategies.base import get_strategy

    tasks = [
        Task.from_examples(name, [Example(f"{name} text", f"{name}.label", name)], []) for name in TASKS
    ]
    stream = rh.TaskStream.from_tasks(tasks)
    phase = tuple(t for t in tasks if t.name in phase_tasks)
    collator = get_strategy(method).collator(
        _phase_context(stream, phase, mixed_memory, keys, tokenizer, method)
    )
    replayed: list[int] = []
    for seed in range(3):
        collator(_features(tokenizer, _near(centres, "current", 8, 10 + seed), "current"))
        replayed += collator.last_replay_ids  # type: ignore[attr-defined]
    assert replayed
    assert not _replayed_tasks(mixed_memory, keys, replayed) & set(phase_tasks)


@pytest.mark.parametrize("seed", range(20))
def test_uniform_random_share_returns_exactly_the_count_asked(
    mixed_memory: Path, keys: rh.KeyRing, seed: int
) -> None:
    # The case: 60 of the 80 eligible old entries (the current task's 40 are filtered out).
    with rh.RehearsalMemory.open(mixed_memory, keys=keys, read_only=True) as memory:
        selector = ReplaySelector(
            memory,
            rh.ReplayConfig(mode="random", balance="uniform"),
            eligible={"task": {"$ne": "current"}},
        )
        batch = _unit(np.random.default_rng(seed).normal(size=(4, DIM)))
        choice = selector.select(batch, 60, rng=np.random.default_rng(seed))
        assert len(choice) == len(set(choice.ids)) == 60
        assert {m["task"] for m in choice.metadata.values()} == {"old_a", "old_b"}
        # Asking for more than is eligible gives everything eligible, once each.
        everything = selector.select(batch, 200, rng=np.random.default_rng(seed))
        assert sorted(everything.ids) == sorted(memory.ids({"task": {"$ne": "current"}}))


def test_class_balanced_random_share_is_even_across_labels_and_exact(
    mixed_memory: Path, keys: rh.KeyRing
) -> None:
    # 80 eligible entries in 4 labels of 20.
    with rh.RehearsalMemory.open(mixed_memory, keys=keys, read_only=True) as memory:
        selector = ReplaySelector(
            memory, rh.ReplayConfig(mode="random", balance="class"), eligible={"task": {"$ne": "current"}}
        )
        for count in (70, 80):
            choice = selector.select(np.zeros((1, DIM), np.float32), count, rng=np.random.default_rng(3))
            labels = [choice.metadata[i]["label"] for i in choice.ids]
            assert len(set(choice.ids)) == count
            per_label = np.bincount(labels, minlength=4)
            assert per_label.max() - per_label.min() <= 1, per_label
            # Every label is drawn once before any is drawn twice.
            assert sorted(labels[:4]) == [0, 1, 2, 3]
