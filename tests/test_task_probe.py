"""The probe router: a class-balanced linear classifier over embeddings; a deployment that routes by it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rehearsal.crypto.keys import KeyRing
from rehearsal.deployment.config import DeploymentConfig
from rehearsal.deployment.folder import Deployment
from rehearsal.deployment.init import init_deployment
from rehearsal.deployment.model import DeployedModel
from rehearsal.deployment.update import update
from rehearsal.errors import ConfigError, StoreFormatError, ValidationError
from rehearsal.methods.inference import embed_texts
from rehearsal.methods.task_probe import TaskProbe
from rehearsal.runner.sentiment import load_sentiment_stream
from tests.test_deployment import FAST, _memory, _write


def _two_groups(rng: np.random.Generator, big: int, small: int) -> tuple[np.ndarray, list[str], np.ndarray]:
    """A big group and a small one that differ along one direction only, with wide shared noise."""
    direction = np.zeros(16)
    direction[0] = 1.0
    noise = 2.0 * rng.normal(size=(big + small, 16))
    x = noise + np.concatenate([np.zeros((big, 16)), np.tile(2.5 * direction, (small, 1))])
    labels = ["big"] * big + ["small"] * small
    queries = 2.0 * rng.normal(size=(400, 16)) + 2.5 * direction  # all from the small group
    return x.astype(np.float32), labels, queries.astype(np.float32)


def test_a_probe_finds_the_small_group_that_a_head_count_misses(rng: np.random.Generator) -> None:
    x, labels, queries = _two_groups(rng, big=600, small=60)
    probe = TaskProbe.fit(x, labels, seed=0)
    assert probe.names == ["big", "small"]
    hit = np.mean([p == "small" for p in probe.predict(queries)])
    # Nearest neighbours of a small-group point are mostly big-group points (10:1, heavy overlap).
    dists = ((queries[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    nearest = np.argsort(dists, axis=1)[:, :16]
    knn_hit = np.mean([(np.asarray(labels)[row] == "small").mean() > 0.5 for row in nearest])
    assert hit > 0.6
    assert knn_hit < 0.2
    assert hit > knn_hit + 0.4


def test_a_probe_round_trips_and_refuses_bad_input(rng: np.random.Generator) -> None:
    x, labels, queries = _two_groups(rng, big=50, small=50)
    probe = TaskProbe.fit(x, labels, seed=3)
    again = TaskProbe.from_dict(probe.to_dict())
    assert again.predict(queries) == probe.predict(queries)
    assert TaskProbe.fit(x, labels, seed=3).predict(queries) == probe.predict(queries)  # deterministic
    with pytest.raises(ValidationError, match="at least 2 groups"):
        TaskProbe.fit(x, ["one"] * len(x))
    with pytest.raises(ValidationError, match="one label per vector"):
        TaskProbe.fit(x, labels[:-1])
    with pytest.raises(ValidationError, match=r"must be \(n, 16\)"):
        probe.predict(queries[:, :8])
    with pytest.raises(StoreFormatError, match="not a stored task probe"):
        TaskProbe.from_dict({"names": ["a"], "weights": [[1.0]], "bias": [0.0]})
    with pytest.raises(ConfigError, match="'router' must be one of"):
        DeploymentConfig(router="vote")


@pytest.mark.slow
def test_a_deployment_with_the_probe_router_routes_by_it(
    tmp_path: Path, tiny_model: str, encoder: Any
) -> None:
    keys = KeyRing.generate()
    stream = load_sentiment_stream(max_train_per_class=10, max_test_per_class=4)
    tweets, _, _, editorials = stream.tasks
    _memory(tmp_path / "mem", keys, encoder, list(tweets.train))
    dep = tmp_path / "dep"
    options = {**FAST, "epochs": 1, "router": "probe", "novelty_threshold": 0.5}
    options["gate"] = {"max_drop": 1.0, "margin": 1.0}
    init_deployment(
        dep, memory=tmp_path / "mem", model=tiny_model, strategy="expert-growth", keys=keys, options=options
    )
    assert Deployment.open(dep, keys).current()[1].router is None  # one expert: nothing to route
    new = update(dep, _write(tmp_path / "ed.jsonl", list(editorials.train)), keys=keys)
    assert new.novelty is not None
    assert new.novelty["decision"] == "new-expert"
    folder = Deployment.open(dep, keys)
    version, state = folder.current()
    assert state.router is not None
    assert sorted(state.router["names"]) == ["expert_0", "expert_1"]
    model = DeployedModel.load(folder.config, state, Path(version.weights))
    texts = [ex.text for ex in (*tweets.test, *editorials.test)]
    with folder.open_memory(read_only=True) as memory:
        routes = model.routes(texts, memory)
        expected = TaskProbe.from_dict(state.router).predict(embed_texts(texts, memory.encoder))
    assert routes == expected
    assert set(routes) <= {"expert_0", "expert_1"}
