"""Replay selection pinned: for every selecting mode, a few seeds and settings, the ids and scores that
``ReplaySelector.select`` returns on one seeded memory are those recorded in
``tests/data/replay_selection_pinned.json``. They were recorded before the modes became one class each
(issue 26), so a refactor that moves a single random draw, or changes which copy of the batch is skipped,
shows here as a changed id.

The ids must match exactly; the scores to float32 precision, because they are FAISS inner products whose
last bits may differ on another CPU. Regenerate only for an intended change of behaviour, and say so in
the commit: ``REHEARSAL_WRITE_PINNED=1 pytest tests/test_replay_selection_pinned.py``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import unit_vectors

from rehearsal.config import ReplayConfig
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.replay.modes import MODES
from rehearsal.replay.selector import ReplaySelector

PINNED = Path(__file__).parent / "data" / "replay_selection_pinned.json"
NOT_CURRENT = {"task": {"$ne": "d"}}
SEEDS = (0, 1, 2)

# name -> (ReplayConfig fields, the eligible filter); every mode the selector chooses in, and the settings
# that send each mode down its other branches (uniform draws, task groups, quotas, no floor, no filter).
CASES: dict[str, tuple[dict[str, Any], dict[str, Any] | None]] = {
    "random": ({"mode": "random"}, NOT_CURRENT),
    "random-uniform": ({"mode": "random", "balance": "uniform"}, NOT_CURRENT),
    "retrieval": ({"mode": "retrieval", "k": 4}, NOT_CURRENT),
    "retrieval-k1-unfiltered": ({"mode": "retrieval", "k": 1}, None),
    "hybrid": ({"mode": "hybrid", "k": 4}, NOT_CURRENT),
    "hybrid-uniform": ({"mode": "hybrid", "random_share": 0.25, "balance": "uniform"}, NOT_CURRENT),
    "mir": ({"mode": "mir", "k": 4}, NOT_CURRENT),
    "mir-task": ({"mode": "mir", "group_by": "task", "random_share": 0.25}, NOT_CURRENT),
    "coverage": ({"mode": "coverage", "k": 4}, NOT_CURRENT),
    "coverage-task-distance": (
        {"mode": "coverage", "group_by": "task", "coverage_quotas": "distance"},
        NOT_CURRENT,
    ),
    "coverage-similarity-no-floor": (
        {"mode": "coverage", "coverage_share": 0.0, "coverage_quotas": "similarity"},
        None,
    ),
    "diverse": ({"mode": "diverse", "k": 4}, NOT_CURRENT),
    "diverse-uniform": ({"mode": "diverse", "k": 2, "balance": "uniform"}, NOT_CURRENT),
}


def _clustered(rng: np.random.Generator, n: int, centre: np.ndarray) -> np.ndarray:
    x = unit_vectors(rng, n) * 0.15 + centre
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _fill(memory: RehearsalMemory, rng: np.random.Generator, centres: np.ndarray, tasks: str) -> None:
    """30 entries per task, each task a cluster with two labels of its own (task d is the current one)."""
    for task in tasks:
        t = "abcde".index(task)
        meta = [{"task": task, "label": 2 * t + (i % 2)} for i in range(30)]
        sources = [f"{task}/{i}" for i in range(30)]
        memory.add(vectors=_clustered(rng, 30, centres[t]), metadata=meta, sources=sources)


def _record(choice: Any) -> dict[str, Any]:
    assert set(choice.metadata) == set(choice.ids)  # the metadata of every id, and of no other
    return {
        "ids": list(choice.ids),
        "scores": [None if math.isnan(s) else float(s) for s in choice.scores],
        "tasks": [choice.metadata[i]["task"] for i in choice.ids],
    }


def run_case(memory: RehearsalMemory, fields: dict[str, Any], eligible: dict[str, Any] | None) -> list[Any]:
    """Every selection of one case, in order: per seed, one selector asked four times (its caches and the
    coverage schedule carry over), then, after the memory grows, each selector asked once more."""
    rng = np.random.default_rng(7)
    centres = unit_vectors(rng, 5)
    _fill(memory, rng, centres, "abcd")
    stored_ids, stored = memory._vectors.load_all()
    own_copies = stored[np.isin(stored_ids, memory.ids({"task": "b"})[:6])]
    batches = [
        (_clustered(np.random.default_rng(11), 8, centres[0]), 7),
        (own_copies, 25),  # the batch's own stored copies, which no mode may replay
        (_clustered(np.random.default_rng(12), 8, centres[2]), 3),
        (_clustered(np.random.default_rng(13), 4, centres[1]), 0),
    ]
    selectors = [ReplaySelector(memory, ReplayConfig(**fields), eligible=eligible) for _ in SEEDS]
    out: list[Any] = []
    for seed, selector in zip(SEEDS, selectors, strict=True):
        for step, (batch, count) in enumerate(batches):
            choice = selector.select(batch, count, rng=np.random.default_rng(100 * seed + step))
            out.append(_record(choice))
    _fill(memory, rng, centres, "e")  # a new generation: caches and the coverage cycle start again
    for seed, selector in zip(SEEDS, selectors, strict=True):
        choice = selector.select(batches[0][0], 9, rng=np.random.default_rng(1000 + seed))
        out.append(_record(choice))
    return out


def _same(got: list[Any], pinned: list[Any]) -> None:
    assert [r["ids"] for r in got] == [r["ids"] for r in pinned]
    assert [r["tasks"] for r in got] == [r["tasks"] for r in pinned]
    for row, want in zip(got, pinned, strict=True):
        assert [s is None for s in row["scores"]] == [s is None for s in want["scores"]]
        scored = [(s, w) for s, w in zip(row["scores"], want["scores"], strict=True) if s is not None]
        assert [s for s, _ in scored] == pytest.approx([w for _, w in scored], rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("case", sorted(CASES))
def test_selection_is_what_was_recorded(case: str, make_memory: Callable[..., RehearsalMemory]) -> None:
    fields, eligible = CASES[case]
    got = run_case(make_memory(case), fields, eligible)
    assert any(r["ids"] for r in got)  # the case selects something, so it pins something
    if os.environ.get("REHEARSAL_WRITE_PINNED") == "1":
        pinned = json.loads(PINNED.read_text(encoding="utf-8")) if PINNED.exists() else {}
        pinned[case] = got
        PINNED.write_text(json.dumps(pinned, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    _same(got, json.loads(PINNED.read_text(encoding="utf-8"))[case])


def test_every_mode_a_selector_chooses_in_is_pinned() -> None:
    pinned = {fields["mode"] for fields, _ in CASES.values()}
    assert pinned == {name for name, cls in MODES.items() if cls.refusal is None}


def test_hybrid_with_every_slot_random_is_random_replay_and_searches_nothing(
    make_memory: Callable[..., RehearsalMemory],
) -> None:
    """With ``random_share = 1`` no slot is a neighbour's: hybrid draws exactly what random replay draws,
    and never pays for a search (nor lets one move the generator or pick a neighbour)."""
    memory = make_memory("hybrid-all-random")
    rng = np.random.default_rng(7)
    centres = unit_vectors(rng, 5)
    _fill(memory, rng, centres, "abcd")
    searches: list[int] = []
    search = memory.search_vectors

    def counted(*args: Any, **kwargs: Any) -> Any:
        searches.append(1)
        return search(*args, **kwargs)

    memory.search_vectors = counted  # type: ignore[method-assign]
    batch = _clustered(np.random.default_rng(11), 8, centres[0])
    for seed in SEEDS:
        hybrid = ReplaySelector(memory, ReplayConfig(mode="hybrid", random_share=1.0), eligible=NOT_CURRENT)
        plain = ReplaySelector(memory, ReplayConfig(mode="random"), eligible=NOT_CURRENT)
        got = hybrid.select(batch, 7, rng=np.random.default_rng(seed))
        want = plain.select(batch, 7, rng=np.random.default_rng(seed))
        assert got.ids == want.ids
        assert len(got.ids) == 7
    assert searches == []
