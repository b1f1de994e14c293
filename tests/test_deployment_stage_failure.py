"""``update --stage`` keeps only a candidate that could pass (issue 29): one the gate already fails is
discarded, entries and all, and the error says why and which strategy is made for new labels."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rehearsal.cli.main import KEY_ENV, main
from rehearsal.crypto.keys import KeyRing
from rehearsal.deployment.folder import Deployment
from rehearsal.deployment.init import init_deployment
from rehearsal.deployment.update import update
from rehearsal.errors import UpdateBlockedError
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.runner.sentiment import load_sentiment_stream
from rehearsal.runner.tasks import Example

FAST = {"epochs": 8, "learning_rate": 5e-3, "batch_size": 8, "max_length": 32, "max_labels": 8}


def _write(path: Path, examples: list[Example], label: str | None = None) -> Path:
    lines = [json.dumps({"text": e.text, "label": label or e.label, "task": e.task}) for e in examples]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def deployment(tmp_path: Path, tiny_model: str, encoder: Any) -> tuple[Path, KeyRing, Any]:
    keys = KeyRing.generate()
    stream = load_sentiment_stream(max_train_per_class=4, max_test_per_class=2)
    tweets, movies = stream.tasks[:2]
    old = [*tweets.train, *movies.train]
    with RehearsalMemory.create(tmp_path / "mem", keys=keys, encoder=encoder) as memory:
        memory.add([e.text for e in old], metadata=[{"task": e.task, "label": e.label} for e in old])
    options = {**FAST, "stage": True, "check_learning": False, "gate": {"max_drop": 0.25, "margin": 1.0}}
    suite = _write(tmp_path / "suite.jsonl", old)
    dep = tmp_path / "dep"
    init_deployment(dep, memory=tmp_path / "mem", model=tiny_model, suite=suite, keys=keys, options=options)
    return dep, keys, stream


def test_a_staged_candidate_the_gate_fails_is_discarded_and_names_expert_growth(deployment, tmp_path):
    dep, keys, stream = deployment
    tweets = stream.tasks[0]
    with Deployment.open(dep, keys).open_memory(read_only=True) as memory:
        before = len(memory)
    # Old tweets relabelled "spam", a label the deployment never saw: the shared adapter unlearns the rest.
    bad = _write(tmp_path / "bad.jsonl", [*tweets.train, *tweets.test], label="spam")
    with pytest.raises(UpdateBlockedError, match=r"not staged.*expert-growth") as blocked:
        update(dep, bad, keys=keys)
    assert blocked.value.decision == "fail"
    reopened = Deployment.open(dep, keys)
    assert reopened.pending() is None
    with reopened.open_memory(read_only=True) as memory:
        assert len(memory) == before
    assert not reopened.weights_dir(blocked.value.update or "").exists()


def test_the_cli_exits_non_zero_when_the_staged_candidate_fails(deployment, tmp_path, capsys, monkeypatch):
    dep, keys, stream = deployment
    monkeypatch.setenv(KEY_ENV, keys.export_base64())
    bad = _write(tmp_path / "bad.jsonl", [*stream.tasks[0].train, *stream.tasks[0].test], label="spam")
    capsys.readouterr()
    assert main(["update", str(dep), "--data", str(bad), "--stage"]) == 4
    out = capsys.readouterr().out
    assert "not staged" in out
    assert "rehearsal init-deployment" in out
