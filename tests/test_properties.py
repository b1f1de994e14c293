"""Property-based tests (Hypothesis) where the input space is large.

Filters against a brute-force evaluator, replay's exclusions and counts over random memories and batches,
the accuracy-matrix summaries against their textbook definitions, and round trips of arbitrary unicode
through the vault and the memory. Example counts are modest and the runs derandomized, so the suite stays
fast and a failure reproduces; memories carry precomputed vectors, so the encoder is never loaded.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rehearsal as rh
from rehearsal.replay.selector import ReplaySelector
from rehearsal.store.sqlite.texts import Vault

DIM = 8
SETTINGS = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@contextmanager
def _folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as name:
        yield Path(name)


def _refs(rows: Iterable[int]) -> list[str]:
    """Embedding-only memories keep a reference per record instead of its text."""
    return [f"doc-{i}" for i in rows]


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


# -- filters against a brute-force evaluator ----------------------------------------------------------

TASK_VALUES = ["billing", "Billing", "bïlling", "1"]
LABEL_VALUES: list[Any] = [0, 1, 2, "1", "a"]
TAG_VALUES = ["safety", "pii", "Safety"]
TENANTS = ["acme", "globex"]

rows_strategy = st.lists(
    st.fixed_dictionaries(
        {
            "task": st.none() | st.sampled_from(TASK_VALUES),
            "label": st.none() | st.sampled_from(LABEL_VALUES),
            "tags": st.lists(st.sampled_from(TAG_VALUES), unique=True, max_size=3),
            "tenant": st.sampled_from(TENANTS),
        }
    ),
    min_size=3,
    max_size=25,
)

_VALUES: dict[str, list[Any]] = {
    "task": TASK_VALUES,
    "label": LABEL_VALUES,
    "tags": TAG_VALUES,
    "tenant": TENANTS,
}


@st.composite
def where_strategy(draw: st.DrawFn, n_rows: int) -> dict[str, Any]:
    where: dict[str, Any] = {}
    for field in draw(st.lists(st.sampled_from([*_VALUES, "id"]), unique=True, max_size=3)):
        if field == "id":
            ops = draw(st.lists(st.sampled_from(["$lt", "$lte", "$gt", "$gte", "$eq", "$ne"]), min_size=1))
            ids = st.integers(min_value=0, max_value=n_rows)  # ids run 0..n_rows-1: bounds land on them
            where["id"] = {op: draw(ids) for op in ops}
            continue
        value = st.sampled_from(_VALUES[field])
        form = draw(st.sampled_from(["bare", "$eq", "$ne", "$in", "$nin", "both"]))
        if form == "bare":
            where[field] = draw(value)
        elif form in ("$eq", "$ne"):
            where[field] = {form: draw(value)}
        elif form == "both":
            where[field] = {
                "$in": draw(st.lists(value, max_size=3)),
                "$nin": draw(st.lists(value, max_size=3)),
            }
        else:
            where[field] = {form: draw(st.lists(value, max_size=3))}
    return where


def _same(a: Any, b: Any) -> bool:
    # SQLite compares stored values by type as well: the label 1 is not the label "1".
    return type(a) is type(b) and a == b


def _holds(row: Mapping[str, Any], field: str, op: str, operand: Any) -> bool:
    """One condition on one row, written from the filter language's documentation."""
    if field == "id":
        value = row["id"]
        return {
            "$eq": value == operand,
            "$ne": value != operand,
            "$lt": value < operand,
            "$lte": value <= operand,
            "$gt": value > operand,
            "$gte": value >= operand,
        }[op]
    wanted = [operand] if op in ("$eq", "$ne") else list(operand)
    if field == "tags":
        hit = any(any(_same(tag, w) for w in wanted) for tag in row["tags"])
    else:
        hit = row[field] is not None and any(_same(row[field], w) for w in wanted)
    return hit if op in ("$eq", "$in") else not hit


def _brute_force(rows: Sequence[Mapping[str, Any]], where: Mapping[str, Any]) -> list[int]:
    out = []
    for row in rows:
        conditions = [
            (field, op, operand)
            for field, condition in where.items()
            for op, operand in (condition.items() if isinstance(condition, Mapping) else [("$eq", condition)])
        ]
        if all(_holds(row, *c) for c in conditions):
            out.append(row["id"])
    return sorted(out)


@SETTINGS
@given(rows=rows_strategy, data=st.data())
def test_filters_select_exactly_what_a_brute_force_evaluator_selects(
    rows: list[dict[str, Any]], data: st.DataObject
) -> None:
    wheres = data.draw(st.lists(where_strategy(len(rows)), min_size=1, max_size=6))
    with _folder() as folder, rh.RehearsalMemory.create(folder / "m", embedding_only=True, dim=DIM) as memory:
        vectors = _unit(np.random.default_rng(0).normal(size=(len(rows), DIM)))
        stored = []
        for tenant in TENANTS:
            mine = [i for i, row in enumerate(rows) if row["tenant"] == tenant]
            if not mine:
                continue
            metadata = [
                {k: rows[i][k] for k in ("task", "label", "tags") if rows[i][k] is not None} for i in mine
            ]
            ids = memory.add(vectors=vectors[mine], metadata=metadata, tenant=tenant, sources=_refs(mine))
            stored += [{**rows[i], "id": entry_id} for i, entry_id in zip(mine, ids, strict=True)]
        for where in wheres:
            expected = _brute_force(stored, where)
            assert memory.ids(where) == expected, where
            # Search applies the same filter: every hit matches, and nothing that matches is left out
            # when k covers the whole memory.
            hits = memory.search_vectors(vectors[:1], k=len(rows), where=where)[0]
            assert sorted(h.id for h in hits) == expected, where


# -- replay over random memories and batches -------------------------------------------------------


@st.composite
def replay_case(draw: st.DrawFn) -> dict[str, Any]:
    tasks = draw(st.integers(min_value=2, max_value=4))
    sizes = draw(st.lists(st.integers(min_value=1, max_value=30), min_size=tasks, max_size=tasks))
    return {
        "sizes": sizes,
        "labels": draw(st.integers(min_value=1, max_value=4)),
        "batch": draw(st.integers(min_value=1, max_value=8)),
        "own": draw(st.integers(min_value=0, max_value=8)),
        "count": draw(st.integers(min_value=1, max_value=60)),
        "mode": draw(st.sampled_from(["random", "retrieval", "hybrid"])),
        "balance": draw(st.sampled_from(["class", "uniform"])),
        "share": draw(st.sampled_from([0.0, 0.25, 0.5, 1.0])),
        "filtered": draw(st.booleans()),
        "seed": draw(st.integers(min_value=0, max_value=2**16)),
    }


@SETTINGS
@given(case=replay_case())
def test_replay_never_returns_the_current_task_or_the_batch_own_rows(case: dict[str, Any]) -> None:
    """The last task is the one being trained; the batch's first rows are stored in it already (own rows).

    With the task filter every mode must exclude both; without it, a mode that searches must still
    leave out the stored copies of the batch's rows. Whenever enough entries are eligible, exactly the
    count asked for comes back, every id once.
    """
    rng = np.random.default_rng(case["seed"])
    sizes: list[int] = case["sizes"]
    current = f"task{len(sizes) - 1}"
    with _folder() as folder, rh.RehearsalMemory.create(folder / "m", embedding_only=True, dim=DIM) as memory:
        centres = _unit(rng.normal(size=(len(sizes), DIM)))
        stored: dict[int, tuple[str, np.ndarray]] = {}
        for t, n in enumerate(sizes):
            vectors = _unit(centres[t] + 0.3 * rng.normal(size=(n, DIM)))
            meta = [{"task": f"task{t}", "label": int(rng.integers(case["labels"]))} for _ in range(n)]
            for entry_id, vector in zip(
                memory.add(vectors=vectors, metadata=meta, sources=_refs(range(n))), vectors, strict=True
            ):
                stored[entry_id] = (f"task{t}", vector)
        own_ids = [i for i, (task, _) in stored.items() if task == current][: min(case["own"], case["batch"])]
        fresh = _unit(centres[-1] + 0.3 * rng.normal(size=(case["batch"] - len(own_ids), DIM)))
        batch = np.concatenate([np.asarray([stored[i][1] for i in own_ids]).reshape(-1, DIM), fresh])
        mode = case["mode"] if case["filtered"] else case["mode"].replace("random", "hybrid")
        config = rh.ReplayConfig(mode=mode, balance=case["balance"], random_share=case["share"], k=4)
        eligible = {"task": {"$ne": current}} if case["filtered"] else None
        selector = ReplaySelector(memory, config, eligible=eligible)
        choice = selector.select(batch, case["count"], rng=np.random.default_rng(case["seed"]))

        assert len(set(choice.ids)) == len(choice.ids)
        assert not set(choice.ids) & set(own_ids)
        if case["filtered"]:
            assert all(stored[i][0] != current for i in choice.ids)
            available = sum(sizes[:-1])
            assert len(choice) == min(case["count"], available)
        assert all(choice.metadata[i]["task"] == stored[i][0] for i in choice.ids)


@SETTINGS
@given(
    eligible=st.integers(min_value=1, max_value=150),
    count=st.integers(min_value=1, max_value=150),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_uniform_random_share_returns_exactly_the_count_asked_whenever_enough_are_eligible(
    uniform_memory: rh.RehearsalMemory, eligible: int, count: int, seed: int
) -> None:
    selector = ReplaySelector(
        uniform_memory, rh.ReplayConfig(mode="random", balance="uniform"), eligible={"id": {"$lt": eligible}}
    )
    choice = selector.select(np.zeros((1, DIM), np.float32), count, rng=np.random.default_rng(seed))
    assert len(choice) == len(set(choice.ids)) == min(count, eligible)
    assert all(i < eligible for i in choice.ids)


@pytest.fixture(scope="module")
def uniform_memory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[rh.RehearsalMemory]:
    """150 entries of one old task and 50 of the current one, with ids 0..199 (the filter cuts by id)."""
    path = tmp_path_factory.mktemp("uniform") / "m"
    vectors = _unit(np.random.default_rng(7).normal(size=(200, DIM)))
    meta = [{"task": "old" if i < 150 else "current", "label": i % 3} for i in range(200)]
    with rh.RehearsalMemory.create(path, embedding_only=True, dim=DIM) as memory:
        memory.add(vectors=vectors, metadata=meta, sources=_refs(range(200)))
        yield memory


# -- the accuracy matrix against its definitions ------------------------------------------------------

fraction = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@st.composite
def matrix_case(draw: st.DrawFn) -> tuple[int, int, list[list[float]], list[float]]:
    t = draw(st.integers(min_value=1, max_value=5))
    k = draw(st.integers(min_value=0, max_value=t))  # leading completed rows
    r = [[draw(fraction) for _ in range(t)] for _ in range(t)]
    baseline = [draw(fraction) for _ in range(t)]
    return t, k, r, baseline


@SETTINGS
@given(case=matrix_case())
def test_accuracy_matrix_summaries_follow_their_definitions(
    case: tuple[int, int, list[list[float]], list[float]],
) -> None:
    t, k, r, baseline = case
    matrix = rh.AccuracyMatrix([f"t{j}" for j in range(t)])
    # Rows 0..k-1 are fully measured (so R[j-1][j] exists for FWT); row k, if any, misses its diagonal.
    for i in range(k):
        for j in range(t):
            matrix.record(i, j, r[i][j])
    if k < t:
        for j in range(k):
            matrix.record(k, j, r[k][j])
    assert matrix.completed_tasks == k
    if k == 0:
        with pytest.raises(rh.ValidationError, match="average accuracy"):
            matrix.average_accuracy()
        return
    last = k - 1
    assert matrix.average_accuracy() == pytest.approx(sum(r[last][j] for j in range(k)) / k)
    for i in range(k):
        assert matrix.average_accuracy(i) == pytest.approx(sum(r[i][: i + 1]) / (i + 1))
    if k == 1:
        for summary in (matrix.backward_transfer, matrix.forgetting):
            with pytest.raises(rh.ValidationError):
                summary()
        return
    bwt = sum(r[last][j] - r[j][j] for j in range(k - 1)) / (k - 1)
    fwt = sum(r[j - 1][j] - baseline[j] for j in range(1, k)) / (k - 1)
    forgetting = {f"t{j}": max(r[i][j] for i in range(j, k - 1)) - r[last][j] for j in range(k - 1)}
    assert matrix.backward_transfer() == pytest.approx(bwt)
    assert matrix.forward_transfer(baseline) == pytest.approx(fwt)
    assert matrix.per_task_forgetting() == pytest.approx(forgetting)
    assert matrix.forgetting() == pytest.approx(sum(forgetting.values()) / (k - 1))
    again = rh.AccuracyMatrix.from_dict(matrix.to_dict())
    assert again == matrix
    assert np.array_equal(again.matrix, matrix.matrix, equal_nan=True)


# -- round trips of arbitrary unicode -----------------------------------------------------------------

# Any text a user can hold in a str and store as UTF-8 (lone surrogates cannot be encoded, so none).
texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=200)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)
metadata_strategy = st.fixed_dictionaries(
    {
        "task": texts,
        "label": st.integers(min_value=-(2**62), max_value=2**62) | texts,
        "tags": st.lists(texts, max_size=3),
    },
    optional={"note": json_values, "score": json_values},
)


@SETTINGS
@given(
    items=st.lists(texts, min_size=1, max_size=6),
    tenant=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True),
)
def test_vault_returns_every_text_it_sealed(items: list[str], tenant: str) -> None:
    keys = rh.KeyRing.generate()
    ids = list(range(3, 3 + len(items)))
    with _folder() as folder:
        with Vault.create(folder / "v", keys) as vault:
            vault.put(ids, items, tenant=tenant)
            assert vault.get(ids) == items
        with Vault.open(folder / "v", keys) as vault:
            assert vault.get(list(reversed(ids))) == list(reversed(items))
            assert vault.verify() == len(items)


# A memory refuses blank texts (they embed to nothing worth replaying); the vault stores them as they are.
stored_texts = texts.filter(lambda text: bool(text.strip()))


@SETTINGS
@given(records=st.lists(st.tuples(stored_texts, metadata_strategy), min_size=1, max_size=5))
def test_memory_returns_every_text_and_metadata_it_stored(records: list[tuple[str, dict[str, Any]]]) -> None:
    keys = rh.KeyRing.generate()
    items = [text for text, _ in records]
    metadata = [meta for _, meta in records]
    vectors = _unit(np.random.default_rng(len(records)).normal(size=(len(records), DIM)))
    with _folder() as folder:
        with rh.RehearsalMemory.create(folder / "m", keys=keys, dim=DIM, encoder_name="synthetic") as memory:
            ids = memory.add(items, vectors=vectors, metadata=metadata, tenant="acme")
        with rh.RehearsalMemory.open(folder / "m", keys=keys, read_only=True) as memory:
            assert memory.get_texts(ids) == items
            rows = memory.entries(ids)
            for entry_id, meta in zip(ids, metadata, strict=True):
                assert rows[entry_id].metadata() == {**meta, "tenant": "acme", "tags": list(meta["tags"])}
            # The filterable fields are found again by equality on the value stored.
            first = metadata[0]
            assert ids[0] in memory.ids({"task": first["task"], "label": first["label"]})
