"""The selection modes mir (its pool), coverage and diverse on a real memory with seeded synthetic vectors,
and the registry that names every replay mode."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest

import rehearsal as rh
from rehearsal.config import REPLAY_MODES
from rehearsal.replay.modes import MODES, ReplayMode, mode_class, register_mode
from rehearsal.replay.selector import ReplayChoice, ReplaySelector

DIM = 16
ELIGIBLE = {"task": {"$ne": "d"}}


def _unit(rng: np.random.Generator, n: int, centre: np.ndarray | None = None) -> np.ndarray:
    base = rng.normal(size=(n, DIM)).astype(np.float32)
    if centre is not None:
        base = base * 0.1 + centre
    return base / np.linalg.norm(base, axis=1, keepdims=True)


@pytest.fixture
def memory(tmp_path) -> Iterator[rh.RehearsalMemory]:
    """Old tasks a, b, c (tight clusters, two labels each) and entries of the current task d."""
    rng = np.random.default_rng(0)
    mem = rh.RehearsalMemory.create(
        tmp_path / "m", keys=rh.KeyRing.generate(), dim=DIM, encoder_name="synthetic"
    )
    centres = _unit(rng, 4)
    for t, task in enumerate("abcd"):
        meta = [{"task": task, "label": 2 * t + (i % 2)} for i in range(40)]
        mem.add([f"{task} {i}" for i in range(40)], vectors=_unit(rng, 40, centres[t]), metadata=meta)
    mem.centres = centres  # type: ignore[attr-defined]
    yield mem
    mem.close()


def _select(memory, mode: str, batch: np.ndarray, count: int, seed: int = 0, **config) -> ReplayChoice:
    selector = ReplaySelector(memory, rh.ReplayConfig(mode=mode, **config), eligible=ELIGIBLE)
    return selector.select(batch, count, rng=np.random.default_rng(seed))


def _near(memory, task: int, n: int = 8, seed: int = 1) -> np.ndarray:
    return _unit(np.random.default_rng(seed), n, memory.centres[task])


@pytest.mark.parametrize("factor", [2.0, 5.0, 8.0])
def test_mir_pool_is_the_configured_size(memory, factor: float) -> None:
    config = rh.ReplayConfig(mode="mir", pool_factor=factor)
    pool = config.pool_size(8)
    assert pool == int(8 * factor) > 8
    choice = _select(memory, "mir", _near(memory, 0), pool, pool_factor=factor)
    assert len(choice) == len(set(choice.ids)) == pool


def test_mir_pool_fills_to_the_size_even_when_the_balanced_draw_runs_dry(memory) -> None:
    # Asking for every eligible entry: the class-balanced draw gives up on nearly exhausted classes, the
    # pool must not come back short (a short pool is a smaller pool_factor than configured).
    choice = _select(memory, "mir", _near(memory, 0), 120)
    assert len(set(choice.ids)) == 120


def test_mir_pool_spreads_over_every_old_class(memory) -> None:
    choice = _select(memory, "mir", _near(memory, 0), 24)
    labels = {choice.metadata[i]["label"] for i in choice.ids}
    assert labels == {0, 1, 2, 3, 4, 5}
    # Its nearest part covers both labels of the nearest task, not only the single nearest label.
    scored = [
        choice.metadata[i]["label"]
        for i, s in zip(choice.ids, choice.scores, strict=True)
        if not math.isnan(s)
    ]
    assert set(scored) >= {0, 1}


@pytest.mark.parametrize("mode", ["mir", "coverage", "diverse"])
def test_modes_are_deterministic_for_a_seed(memory, mode: str) -> None:
    batch = _near(memory, 1)
    first = _select(memory, mode, batch, 12, seed=5)
    again = _select(memory, mode, batch, 12, seed=5)
    other = _select(memory, mode, batch, 12, seed=6)
    assert first.ids == again.ids
    assert first.ids != other.ids


@pytest.mark.parametrize("mode", ["mir", "coverage", "diverse"])
def test_modes_never_return_the_current_task_or_the_batch_own_rows(memory, mode: str) -> None:
    ids, vectors = memory._vectors.load_all()
    own_ids = memory.ids({"task": "a"})[:8]
    batch = vectors[np.isin(ids, own_ids)]  # the batch's examples are stored, under an eligible task
    for seed in range(5):
        choice = _select(memory, mode, batch, 60, seed=seed)
        assert len(choice) == 60
        assert not set(choice.ids) & set(own_ids)
        assert all(choice.metadata[i]["task"] != "d" for i in choice.ids)


def test_coverage_floor_replays_every_old_class_within_the_bound(memory) -> None:
    # 6 old labels, 4 replay slots, half of them floor -> 2 labels per batch -> every label within 3 batches,
    # although the batches all sit on task a, whose neighbours alone would replay labels 0 and 1 only.
    selector = ReplaySelector(
        memory, rh.ReplayConfig(mode="coverage", coverage_share=0.5, k=4), eligible=ELIGIBLE
    )
    seen = []
    for step in range(30):
        choice = selector.select(_near(memory, 0, seed=step), 4, rng=np.random.default_rng(step))
        assert len(choice) == 4
        seen.append({choice.metadata[i]["label"] for i in choice.ids})
    for start in range(len(seen) - 2):
        assert set().union(*seen[start : start + 3]) == {0, 1, 2, 3, 4, 5}, start


def test_retrieval_alone_breaks_the_coverage_bound(memory) -> None:
    """The contrast that makes the floor test meaningful: nearest neighbours stay on the nearest task."""
    selector = ReplaySelector(memory, rh.ReplayConfig(mode="retrieval", k=4), eligible=ELIGIBLE)
    labels = set()
    for step in range(10):
        choice = selector.select(_near(memory, 0, seed=step), 4, rng=np.random.default_rng(step))
        labels |= {choice.metadata[i]["label"] for i in choice.ids}
    assert labels == {0, 1}


@pytest.mark.parametrize(("quotas", "most"), [("distance", False), ("similarity", True)])
def test_coverage_quotas_follow_task_similarity(memory, quotas: str, most: bool) -> None:
    choice = _select(memory, "coverage", _near(memory, 0), 30, coverage_share=0.0, coverage_quotas=quotas)
    tasks = [choice.metadata[i]["task"] for i in choice.ids]
    near, far = tasks.count("a"), max(tasks.count("b"), tasks.count("c"))
    assert (near > far) if most else (near < far)


def test_diverse_samples_from_the_union_of_each_query_top_k(memory) -> None:
    batch = _unit(np.random.default_rng(2), 8)  # spread out: the union spans several tasks
    hits = memory.search_vectors(batch, 4, where=ELIGIBLE)
    union = {h.id for row in hits for h in row}
    choice = _select(memory, "diverse", batch, 12, k=4)
    assert len(union) > 12
    assert set(choice.ids) <= union
    # A random subsample, not the top of the ranking: not every pick is a rank-1 hit.
    assert set(choice.ids) != {row[0].id for row in hits}


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("pool_factor", 1.0, "'pool_factor' must be a number > 1"),
        ("pool_factor", 0.5, "'pool_factor' must be a number > 1"),
        ("pool_factor", True, "'pool_factor' must be a number > 1"),
        ("pool_factor", float("inf"), "'pool_factor' must be a number > 1"),
        ("group_by", "tenant", "'group_by' must be one of"),
        ("coverage_share", 1.5, r"'coverage_share' must be in \[0, 1\]"),
        ("coverage_quotas", "inverse", "'coverage_quotas' must be one of"),
        ("mode", "interference", "'mode' must be one of"),
        ("mir_scope", "encoder", "'mir_scope' must be one of"),
    ],
)
def test_invalid_selection_settings_are_rejected(field: str, value: object, match: str) -> None:
    with pytest.raises(rh.ConfigError, match=match):
        rh.ReplayConfig(**{field: value})


def test_selection_settings_round_trip(tmp_path) -> None:
    config = rh.ReplayConfig(mode="coverage", pool_factor=6.0, group_by="task", coverage_quotas="distance")
    config.save(tmp_path / "replay.json")
    assert rh.ReplayConfig.load(tmp_path / "replay.json") == config


# -- the registry -------------------------------------------------------------------------------------


def test_every_configurable_mode_is_one_registered_class() -> None:
    assert sorted(MODES) == sorted(REPLAY_MODES)
    assert all(cls.name == name for name, cls in MODES.items())


def test_a_mode_off_the_config_list_is_not_registered() -> None:
    class Unlisted(ReplayMode):
        name = "nearest-first"

    with pytest.raises(rh.ConfigError, match="'nearest-first' is registered twice or not among"):
        register_mode(Unlisted)
    assert "nearest-first" not in MODES


def test_a_mode_name_is_registered_once() -> None:
    class Again(ReplayMode):
        name = "random"

    with pytest.raises(rh.ConfigError, match="'random' is registered twice"):
        register_mode(Again)
    assert MODES["random"] is not Again


def test_an_unknown_mode_name_does_not_resolve() -> None:
    with pytest.raises(rh.ConfigError, match="unknown replay mode 'nearest-first'"):
        mode_class("nearest-first")


def test_the_selector_refuses_the_generative_mode(memory) -> None:
    # Generative replay is written by a generator and drawn by GenerativeCollator, not chosen from memory.
    selector = ReplaySelector(memory, rh.ReplayConfig(mode="generative"), eligible=ELIGIBLE)
    with pytest.raises(rh.ConfigError, match=r"use rehearsal\.replay\.generative\.GenerativeCollator"):
        selector.select(_near(memory, 0), 4, rng=np.random.default_rng(0))


def test_a_selector_keeps_one_mode_instance_so_the_coverage_schedule_carries_over(memory) -> None:
    selector = ReplaySelector(memory, rh.ReplayConfig(mode="coverage", k=4), eligible=ELIGIBLE)
    first = selector.select(_near(memory, 0), 4, rng=np.random.default_rng(0))
    second = selector.select(_near(memory, 0), 4, rng=np.random.default_rng(0))
    fresh = ReplaySelector(memory, rh.ReplayConfig(mode="coverage", k=4), eligible=ELIGIBLE)
    # The same generator again, but the floor has moved on to the next groups of its cycle.
    assert second.ids != first.ids
    assert fresh.select(_near(memory, 0), 4, rng=np.random.default_rng(0)).ids == first.ids
