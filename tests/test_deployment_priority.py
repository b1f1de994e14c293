"""Priority replay in deployment updates: safety-tagged and rare-class entries are replayed more than their
share of the memory (issue 16: "reservoir + priority for rare classes and safety incidents")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rehearsal.config import ReplayConfig
from rehearsal.crypto.keys import KeyRing
from rehearsal.deployment.config import DeploymentConfig
from rehearsal.deployment.init import init_deployment
from rehearsal.deployment.priority import PrioritySelector, priority_ids, rare_labels
from rehearsal.deployment.update import update
from rehearsal.errors import ConfigError
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.runner.sentiment import load_sentiment_stream

FAST = {
    "epochs": 2,
    "learning_rate": 5e-3,
    "batch_size": 8,
    "max_length": 32,
    "max_labels": 8,
    "check_learning": False,
}


def _memory(path: Path, keys: KeyRing, encoder: Any) -> tuple[Path, int, int]:
    """Tweets (3 labels x 10), 2 of them safety-tagged, plus 2 of a rare label: (path, priority, all)."""
    tweets = load_sentiment_stream(max_train_per_class=10, max_test_per_class=1).tasks[0]
    rows = [{"task": ex.task, "label": ex.label, "tags": []} for ex in tweets.train]
    texts = [ex.text for ex in tweets.train]
    for row in rows[:2]:
        row["tags"] = ["safety"]
    texts += ["the app charged me twice and support never answered", "refund me now or I call my bank"]
    rows += [{"task": "tweets", "label": "urgent", "tags": []}] * 2
    with RehearsalMemory.create(path, keys=keys, encoder=encoder) as memory:
        memory.add(texts, metadata=rows)
    return path, 4, len(texts)


def test_rare_labels_are_those_well_below_the_mean_count() -> None:
    assert rare_labels({"a": 10, "b": 10, "c": 2}, 0.5) == ["c"]
    assert rare_labels({"a": 10, "b": 8}, 0.5) == []
    assert rare_labels({"a": 1}, 0.5) == []  # a single label is never rare
    assert rare_labels({"a": 10, "c": 1}, 0.0) == []


def test_priority_ids_are_the_tagged_and_rare_entries(tmp_path: Path, encoder: Any) -> None:
    keys = KeyRing.generate()
    path, n_priority, _ = _memory(tmp_path / "mem", keys, encoder)
    with RehearsalMemory.open(path, keys=keys, read_only=True) as memory:
        found = priority_ids(memory, {}, tags=["safety"], rare_share=0.5)
        assert len(found) == n_priority
        rows = memory.entries(found)
        assert all("safety" in r.tags or r.label == "urgent" for r in rows.values())
        assert priority_ids(memory, {"task": "other"}, tags=["safety"], rare_share=0.5) == []


def test_the_selector_reserves_its_share_and_without_it_gives_only_the_memory_share(
    tmp_path: Path, encoder: Any
) -> None:
    keys = KeyRing.generate()
    path, _, _ = _memory(tmp_path / "mem", keys, encoder)
    with RehearsalMemory.open(path, keys=keys, read_only=True) as memory:
        priority = priority_ids(memory, {}, tags=["safety"], rare_share=0.5)
        batch = memory.encoder.encode(["my order never arrived"]).astype(np.float32)
        shares = {}
        for share in (0.0, 0.5):
            selector = PrioritySelector(
                memory, ReplayConfig(k=4), eligible=None, priority=priority, share=share
            )
            picked = 0
            drawn = 0
            for step in range(40):
                choice = selector.select(batch, 4, rng=np.random.default_rng(step))
                assert len(set(choice.ids)) == len(choice.ids) == 4
                picked += sum(i in priority for i in choice.ids)
                drawn += len(choice.ids)
            shares[share] = picked / drawn
    assert shares[0.5] >= 0.5  # two of every four slots are reserved
    assert shares[0.5] > shares[0.0] + 0.2


def test_an_update_replays_priority_entries_more_than_their_share(
    tmp_path: Path, tiny_model: str, encoder: Any
) -> None:
    keys = KeyRing.generate()
    path, n_priority, total = _memory(tmp_path / "mem", keys, encoder)
    dep = tmp_path / "dep"
    options = {**FAST, "gate": {"max_drop": 1.0, "margin": 1.0}}
    init_deployment(dep, memory=path, model=tiny_model, keys=keys, options=options)
    products = load_sentiment_stream(max_train_per_class=8, max_test_per_class=1).tasks[2]
    data = tmp_path / "products.jsonl"
    with data.open("w", encoding="utf-8") as fh:
        for ex in products.train:
            fh.write(json.dumps({"text": ex.text, "label": ex.label, "task": ex.task}) + "\n")
    done = update(dep, data, keys=keys)
    counted = done.metrics["training"]
    # init-deployment keeps some of the memory back as its suite, so fewer than all are eligible.
    assert 2 <= counted["priority_entries"] <= n_priority
    assert counted["priority_entries"] < counted["eligible_entries"] <= total
    assert counted["replayed"] >= 12
    memory_share = counted["priority_entries"] / counted["eligible_entries"]
    assert counted["priority_replayed"] / counted["replayed"] > 2 * memory_share, counted


def test_the_priority_settings_are_checked() -> None:
    assert DeploymentConfig().priority_share == 0.25
    with pytest.raises(ConfigError, match="'priority_share' must be a number in"):
        DeploymentConfig(priority_share=1.5)
    with pytest.raises(ConfigError, match="'rare_label_share'"):
        DeploymentConfig(rare_label_share=-0.1)
