"""An update's recorded numbers are the deployed version's: a new expert is scored as it will be routed.

Expert growth routes each input by the memory's k-NN vote over tasks, so the candidate must be scored over
a memory that already holds its new task's entries; scored over the old memory, every held-out example of
the new task went to the old expert, which cannot even answer the new labels (recorded accuracy 0).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rehearsal.crypto.keys import KeyRing
from rehearsal.deployment.evaluate import score
from rehearsal.deployment.examples import suite_examples
from rehearsal.deployment.folder import Deployment
from rehearsal.deployment.init import init_deployment
from rehearsal.deployment.model import DeployedModel
from rehearsal.deployment.update import update
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.runner.sentiment import load_sentiment_stream
from tests.test_deployment import FAST

NEW_LABELS = {"negative": "ed-negative", "neutral": "ed-neutral", "positive": "ed-positive"}


@pytest.mark.slow
def test_a_new_experts_recorded_accuracy_is_what_the_deployed_version_scores(
    tmp_path: Path, tiny_model: str, encoder: Any
) -> None:
    keys = KeyRing.generate()
    stream = load_sentiment_stream(max_train_per_class=20, max_test_per_class=2)
    tweets, editorials = stream.tasks[0], stream.tasks[3]
    with RehearsalMemory.create(tmp_path / "mem", keys=keys, encoder=encoder) as memory:
        rows = list(tweets.train)
        memory.add([e.text for e in rows], metadata=[{"task": e.task, "label": e.label} for e in rows])
    dep = tmp_path / "dep"
    options = {**FAST, "epochs": 1, "novelty_threshold": 0.5, "gate": {"max_drop": 1.0, "margin": 1.0}}
    init_deployment(
        dep, memory=tmp_path / "mem", model=tiny_model, strategy="expert-growth", keys=keys, options=options
    )
    data = tmp_path / "new.jsonl"
    with data.open("w", encoding="utf-8") as fh:  # the new line has labels of its own
        for ex in editorials.train:
            fh.write(json.dumps({"text": ex.text, "label": NEW_LABELS[ex.label], "task": ex.task}) + "\n")
    done = update(dep, data, keys=keys)
    assert done.novelty is not None
    assert done.novelty["decision"] == "new-expert", done.novelty
    deployment = Deployment.open(dep, keys)
    version, state = deployment.current()
    deployed = DeployedModel.load(deployment.config, state, Path(version.weights))
    with deployment.open_memory(read_only=True) as memory, deployment.open_suite() as suite:
        held = suite_examples(suite, ["editorials"])
        fresh = score(deployed, held, memory)
    assert held
    assert set(fresh.answers) & set(NEW_LABELS.values())  # some go to the new expert once deployed
    assert state.metrics["accuracy"]["editorials"] == pytest.approx(fresh.accuracy_by_task()["editorials"])
