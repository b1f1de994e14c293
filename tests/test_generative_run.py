"""``method = "generative"`` inside the real run loop: an embedding-only memory, the generator's state
between phases, replay from the generated pool. Tiny models: the BERT of conftest.py and a tiny Llama."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _models import tiny_causal_lm, tiny_run_config

from rehearsal.crypto.keys import KeyRing
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.methods.generative.pool import GeneratedPool
from rehearsal.runner import loop as stream_module
from rehearsal.runner.config import RunConfig
from rehearsal.runner.tasks import TaskStream

pytestmark = pytest.mark.usefixtures("master_key")


@pytest.fixture
def one_thread() -> object:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two threads on 2 shared cores make tiny models 30x slower
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_a_generative_run_keeps_no_text_and_replays_generated_examples_of_old_classes(
    tmp_path: Path, tiny_model: str, tiny_stream: TaskStream
) -> None:
    texts = [e.text for task in tiny_stream.tasks for e in task.train]
    generator = tiny_causal_lm(tmp_path / "lm", texts)
    generative = {
        "model": generator,
        "per_class": 3,
        "max_new_tokens": 8,
        "train_per_class": 2,
        "epochs": 1.0,
        "guide_floor": "absolute",
        "min_similarity": -1.0,  # the guide passes all but empty texts: this test is about the plumbing
        "margin": -2.0,
        "copy_cosine": 1.0,
        "canaries": 2,
    }
    config = tiny_run_config(tmp_path, tiny_model, method="generative", generative=generative)
    result = stream_module.run(config, stream=tiny_stream)
    out = tmp_path / "run"
    memory = RehearsalMemory.open(
        out / "memory", keys=KeyRing.from_env("REHEARSAL_MASTER_KEY"), read_only=True
    )
    assert memory.embedding_only
    assert len(memory) == sum(len(task.train) for task in tiny_stream.tasks)
    memory.close()
    stored = b"".join(f.read_bytes() for f in (out / "memory").rglob("*") if f.is_file())
    assert not any(text.encode() in stored for text in texts)
    pool = GeneratedPool.load(out / "generative" / "pool.json")
    first = {tiny_stream.label_id(label) for label in tiny_stream.tasks[0].labels}
    assert set(pool.labels()) <= first  # only the first task is written: nothing follows the last
    assert all(e.phase == 0 for e in pool.entries)
    report = json.loads((out / "generative" / "phase_0.json").read_text())
    assert report["logs"]["generated_texts"] == 3 * 2 * len(first)  # oversampled for the guide
    assert report["copies_generated"]["canaries"] == 2
    assert set(report["class_floors"]) == set(tiny_stream.tasks[0].labels)  # from the stored vectors
    assert report["logs"]["guide_slots_absolute"] >= report["logs"]["generated_kept"]
    assert (out / "generative" / "adapter_after_phase_0").is_dir()
    assert not (out / "generative" / "adapter_after_phase_1").exists()
    assert len(pool) > 0
    assert result.cost.replayed_examples > 0
    assert "generation_tokens_per_second" in result.phase_logs[0]


def test_the_run_config_takes_a_generative_section() -> None:
    config = RunConfig(method="generative", generative={"guide": False, "per_class": 4})
    assert config.generative.guide is False
    assert RunConfig.from_dict(config.to_dict()) == config


def test_a_command_line_override_reaches_the_generative_table() -> None:
    from rehearsal.runner.overrides import apply_overrides

    config = apply_overrides(
        RunConfig(method="generative"), ["generative.guide=false", "generative.canaries=20"]
    )
    assert (config.generative.guide, config.generative.canaries) == (False, 20)
