"""Shared, seeded fixtures. The encoder is the packaged MiniLM, loaded offline once per session."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import Phase, settings
from milvus_fixtures import milvus_server, milvus_url  # noqa: F401  (fixtures)
from postgres_fixtures import postgres_server, postgres_url  # noqa: F401  (fixtures)

from rehearsal.crypto.keys import KeyRing
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.runner.tasks import Task, TaskStream, load_wordnet_stream

# Mutation testing (scripts/mutation.py) needs to know that a property fails, not its smallest failing case:
# its runs skip shrinking, which can take minutes per mutant.
settings.register_profile("mutation", phases=[Phase.explicit, Phase.reuse, Phase.generate])


@pytest.fixture
def keys() -> KeyRing:
    return KeyRing.generate()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def encoder() -> Any:
    from rehearsal.embedding import load_encoder

    return load_encoder()


@pytest.fixture
def master_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs keep their memory encrypted; the key comes from the environment, as in scripts/main.sh."""
    from rehearsal.crypto.keys import KeyRing

    monkeypatch.setenv("REHEARSAL_MASTER_KEY", KeyRing.generate().export_base64())


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from rehearsal.embedding import default_model_path

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(str(default_model_path()))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        num_labels=6,
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_stream() -> TaskStream:
    """2 tasks x 3 classes, 4 train and 2 test examples per class, real WordNet glosses."""
    full = load_wordnet_stream(max_train_per_class=4, max_test_per_class=2, tasks=["living", "verbs"])
    tasks = []
    for task in full.tasks:
        keep = set(task.labels[:3])
        tasks.append(
            Task.from_examples(
                task.name,
                [e for e in task.train if e.label in keep],
                [e for e in task.test if e.label in keep],
            )
        )
    return TaskStream.from_tasks(tasks)


# -- memories -------------------------------------------------------------------------------------------

MEMORY_DIM = 16


def unit_vectors(rng: np.random.Generator, n: int, dim: int = MEMORY_DIM) -> np.ndarray:
    """``n`` random unit vectors (n, dim) float32."""
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def make_memory(tmp_path: Path) -> Iterator[Callable[..., RehearsalMemory]]:
    """A factory of fresh memories under ``tmp_path`` with a synthetic encoder identity (vectors are passed
    in); every memory it made is closed at teardown."""
    made: list[RehearsalMemory] = []

    def make(name: str = "mem", *, keys: KeyRing | None = None, **kw: Any) -> RehearsalMemory:
        kw.setdefault("embedding_only", keys is None)
        memory = RehearsalMemory.create(
            tmp_path / name, keys=keys, dim=MEMORY_DIM, encoder_name="synthetic", **kw
        )
        made.append(memory)
        return memory

    yield make
    for memory in made:
        memory.close()


@pytest.fixture
def filled_memory(make_memory: Callable[..., RehearsalMemory], keys: KeyRing) -> RehearsalMemory:
    """An encrypted memory of 60 entries: tasks a, b, c (20 each), labels 0-5, tenants acme and globex."""
    memory = make_memory("filled", keys=keys)
    rng = np.random.default_rng(0)
    for t, task in enumerate("abc"):
        meta = [{"task": task, "label": 2 * t + (i % 2)} for i in range(20)]
        texts = [f"{task} example {i}" for i in range(20)]
        memory.add(texts, vectors=unit_vectors(rng, 20), metadata=meta, tenant="acme" if t < 2 else "globex")
    return memory
