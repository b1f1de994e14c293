"""TaskGate: a task classifier fine-tuned on a memory's texts and task labels, as the adapters' router.

Trained here on the tiny BERT of conftest.py (real Trainer, real encrypted memory) over texts whose tasks
differ in their words, so a few epochs separate them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rehearsal.crypto.keys import KeyRing
from rehearsal.errors import ConfigError, StoreFormatError, ValidationError
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.methods.router import TaskGate

ANIMALS = ["a large wild cat", "a small dog", "a striped horse", "a spotted cat", "a grey wolf", "a tame dog"]
ACTIONS = ["move fast on foot", "speak loudly", "move slowly", "speak softly", "run away", "walk home"]


def _texts() -> tuple[list[str], list[str]]:
    return ANIMALS + ACTIONS, ["living"] * len(ANIMALS) + ["verbs"] * len(ACTIONS)


@pytest.fixture(scope="module")
def gate(tiny_model: str, tmp_path_factory: pytest.TempPathFactory) -> TaskGate:
    texts, tasks = _texts()
    folder = tmp_path_factory.mktemp("gate-memory")
    encoder_free = np.random.default_rng(0).normal(size=(len(texts), 384)).astype(np.float32)
    with RehearsalMemory.create(folder / "mem", keys=KeyRing.generate()) as memory:
        memory.add(texts, metadata=[{"task": t} for t in tasks], vectors=encoder_free)
        memory.add(["an entry without a task"], vectors=encoder_free[:1])
        return TaskGate.from_memory(
            memory, base_model=tiny_model, epochs=30, learning_rate=3e-3, batch_size=4, seed=0
        )


def test_a_gate_trained_on_the_memory_routes_its_texts_to_their_tasks(gate: TaskGate) -> None:
    texts, tasks = _texts()
    assert gate.tasks == ["living", "verbs"]  # the entry without a task is not a class
    assert gate.route_accuracy(texts, tasks) >= 0.9
    probs = gate.probabilities(texts)
    assert probs.shape == (len(texts), 2)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_the_threshold_sends_unsure_inputs_to_the_fallback(gate: TaskGate) -> None:
    texts, _ = _texts()
    top = [p for _, p in gate.vote(texts)]
    threshold = float(np.median(top))
    routes = gate.route(texts, threshold=threshold, fallback="merged")
    assert [r == "merged" for r in routes] == [p < threshold for p in top]
    assert gate.route(texts, threshold=0.0, fallback="merged").count("merged") == 0


def test_save_and_load_give_the_same_routes(gate: TaskGate, tmp_path: Path) -> None:
    texts, _ = _texts()
    gate.save(tmp_path / "gate")
    loaded = TaskGate.load(tmp_path / "gate")
    assert loaded.tasks == gate.tasks
    assert np.allclose(loaded.probabilities(texts), gate.probabilities(texts), atol=1e-6)


def test_bad_input_is_refused(gate: TaskGate, tiny_model: str, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="at least 2 tasks"):
        TaskGate.train(["a", "b"], ["x", "x"], base_model=tiny_model)
    with pytest.raises(ValidationError, match="2 texts but 1 task"):
        TaskGate.train(["a", "b"], ["x"], base_model=tiny_model)
    with pytest.raises(ConfigError, match="'threshold'"):
        gate.route(["a"], threshold=1.5)
    with pytest.raises(ValidationError, match="as many true tasks"):
        gate.route_accuracy(["a"], [])
    with pytest.raises(StoreFormatError, match=r"gate\.json"):
        TaskGate.load(tmp_path)
    with (
        RehearsalMemory.create(tmp_path / "vec", embedding_only=True, dim=4) as memory,
        pytest.raises(ConfigError, match="embedding-only"),
    ):
        TaskGate.from_memory(memory)
