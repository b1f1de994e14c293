"""A deployment's updates train under bf16 autocast when ``bf16_training`` asks for it, and only then: the
setting reaches the training core (``rehearsal.training.trainer``) that runs and deployments share."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from rehearsal.crypto.keys import KeyRing
from rehearsal.deployment.config import DeploymentConfig
from rehearsal.deployment.init import init_deployment
from rehearsal.deployment.update import update
from rehearsal.errors import ConfigError
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.methods.calibration import classification_head
from rehearsal.runner.sentiment import load_sentiment_stream

FAST = {"epochs": 1, "learning_rate": 5e-3, "batch_size": 8, "max_length": 32, "check_learning": False}


def test_a_bad_bf16_training_value_is_refused() -> None:
    with pytest.raises(ConfigError, match="'bf16_training' must be true, false or"):
        DeploymentConfig(bf16_training="yes")  # type: ignore[arg-type]


@pytest.mark.parametrize(("bf16", "expected"), [(True, torch.bfloat16), (False, torch.float32)])
def test_an_updates_training_steps_run_in_the_configured_arithmetic(
    tmp_path: Path,
    tiny_model: str,
    encoder: Any,
    monkeypatch: pytest.MonkeyPatch,
    bf16: bool,
    expected: torch.dtype,
) -> None:
    import rehearsal.training.trainer as core

    seen: list[torch.dtype] = []
    real_train = core.train

    def watched(model: Any, settings: Any, **kwargs: Any) -> Any:
        # The real training pass, with a hook that notes the dtype of the head's output at each step.
        head = classification_head(model)
        remove = head.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
        try:
            return real_train(model, settings, **kwargs)
        finally:
            remove.remove()

    monkeypatch.setattr(core, "train", watched)
    keys = KeyRing.generate()
    stream = load_sentiment_stream(max_train_per_class=3, max_test_per_class=1)
    tweets, movies = stream.tasks[:2]
    with RehearsalMemory.create(tmp_path / "mem", keys=keys, encoder=encoder) as memory:
        memory.add(
            [e.text for e in tweets.train],
            metadata=[{"task": e.task, "label": e.label} for e in tweets.train],
        )
    dep = tmp_path / "dep"
    options = {**FAST, "bf16_training": bf16, "gate": {"max_drop": 1.0, "margin": 1.0}}
    init_deployment(dep, memory=tmp_path / "mem", model=tiny_model, keys=keys, options=options)
    data = tmp_path / "movies.jsonl"
    data.write_text(
        "".join(json.dumps({"text": e.text, "label": e.label, "task": e.task}) + "\n" for e in movies.train),
        encoding="utf-8",
    )
    seen.clear()
    update(dep, data, keys=keys)
    assert seen, "the update trained no step"
    assert set(seen) == {expected}


def test_a_deployment_keeps_a_bf16_memorys_arithmetic_in_its_memory_and_suite(
    tmp_path: Path, tiny_model: str
) -> None:
    """A memory embedded in bf16 (a run with ``encoder_backend = "auto"`` on this CPU, say) starts a
    deployment: the deployment opens it with its own encoder, its suite embeds likewise, and an update
    goes through (it used to open every memory with the fp32 encoder and be refused)."""
    from rehearsal.embedding import load_encoder, split_backend
    from rehearsal.store.layout import peek_manifest

    keys = KeyRing.generate()
    stream = load_sentiment_stream(max_train_per_class=3, max_test_per_class=1)
    tweets, movies = stream.tasks[:2]
    with RehearsalMemory.create(tmp_path / "mem", keys=keys, encoder=load_encoder(backend="bf16")) as memory:
        metadata = [{"task": e.task, "label": e.label} for e in tweets.train]
        memory.add([e.text for e in tweets.train], metadata=metadata)
    dep = tmp_path / "dep"
    options = {**FAST, "gate": {"max_drop": 1.0, "margin": 1.0}}
    init_deployment(dep, memory=tmp_path / "mem", model=tiny_model, keys=keys, options=options)
    for folder in ("memory", "suite"):
        assert split_backend(peek_manifest(dep / folder)["encoder"]["name"])[1] == "bf16", folder
    data = tmp_path / "movies.jsonl"
    data.write_text(
        "".join(json.dumps({"text": e.text, "label": e.label, "task": e.task}) + "\n" for e in movies.train),
        encoding="utf-8",
    )
    update(dep, data, keys=keys)
