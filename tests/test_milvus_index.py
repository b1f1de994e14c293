"""The Milvus vector index against a real server (the session's milvus-lite, reached by URI like a cluster):
filters answered inside Milvus agree with the record store, deletions and erasures reach the collection,
a search never returns an id the records no longer hold, and a writer that died after its commit loses
nothing when the memory opens again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import MEMORY_DIM, unit_vectors

import rehearsal as rh
from rehearsal.crypto.keys import KeyRing
from rehearsal.errors import ConfigError, StorageError, ValidationError
from rehearsal.store.milvus.connection import parse_location
from rehearsal.store.milvus.expr import compile_where, quote
from rehearsal.store.milvus.index import MilvusIndex
from rehearsal.store.registry import create_backends, open_backends
from rehearsal.store.where import parse_where

# Values a filter must carry through untouched: quotes, backslashes, a newline, braces, non-ASCII.
ODD_TASKS = ['say "hi"', "back\\slash", "two\nlines", "{t}", "café ☕", "x' or 1==1 or '"]


def _metadata(i: int) -> dict[str, Any]:
    meta: dict[str, Any] = {"tags": ["rare"] if i % 5 == 0 else (["x", 'q"uote'] if i % 2 else [])}
    if i % 7:  # every seventh entry has no task
        meta["task"] = ODD_TASKS[i % len(ODD_TASKS)]
    if i % 4 == 1:
        meta["label"] = f"name-{i % 3}"
    elif i % 4 != 3:  # every fourth entry has no label
        meta["label"] = i % 6
    return meta


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where the records live: a folder (SQLite) or a database on the session's PostgreSQL."""
    if request.param == "sqlite":
        return str(tmp_path / "m")
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def memory(location: str, keys: KeyRing, milvus_url: str) -> Iterator[rh.RehearsalMemory]:
    mem = rh.RehearsalMemory.create(
        location, keys=keys, dim=MEMORY_DIM, encoder_name="synthetic", vectors=milvus_url
    )
    rng = np.random.default_rng(0)
    for tenant, start in (("acme", 0), ("globex", 30)):
        mem.add(
            [f"text {i}" for i in range(start, start + 30)],
            metadata=[_metadata(i) for i in range(start, start + 30)],
            vectors=unit_vectors(rng, 30),
            tenant=tenant,
        )
    yield mem
    mem.close()


def _milvus(mem: rh.RehearsalMemory) -> MilvusIndex:
    index = mem._vectors
    assert isinstance(index, MilvusIndex)
    return index


WHERES: list[dict[str, Any]] = [
    {"task": 'say "hi"'},
    {"task": {"$in": ["back\\slash", "two\nlines", "{t}"]}},
    {"task": {"$ne": "café ☕"}},
    {"task": {"$nin": ["x' or 1==1 or '", 'say "hi"']}},
    {"task": {"$in": []}},
    {"task": {"$nin": []}},
    {"label": 2},
    {"label": "name-1"},
    {"label": {"$in": [0, "name-2"]}},
    {"label": {"$nin": [0, "name-2"]}},
    {"label": {"$gte": 1, "$lt": 4}},
    {"tags": "rare"},
    {"tags": {"$in": ['q"uote']}},
    {"tags": {"$nin": ["x", "rare"]}},
    {"tenant": "globex", "id": {"$gte": 40}},
    {"tenant": {"$ne": "acme"}, "label": {"$lte": 3}},
    {"id": {"$in": [3, 5, 59, 1000]}},
    {"id": {"$nin": [0, 1, 2]}, "tags": "x"},
]


@pytest.mark.parametrize("where", WHERES, ids=[str(w) for w in WHERES])
def test_a_filter_answered_by_milvus_selects_what_the_record_store_selects(
    memory: rh.RehearsalMemory, where: dict[str, Any]
) -> None:
    expected = set(memory.ids(where))
    query = unit_vectors(np.random.default_rng(1), 1)
    hits = memory.search_vectors(query, 60, where=where)
    assert {hit.id for hit in hits[0]} == expected


def test_user_strings_never_reach_the_expression_as_text() -> None:
    expr = compile_where(parse_where({"task": 'a" or id > 0 or task == "', "tags": "zz"}))
    assert expr is not None
    assert '" or id > 0' not in expr
    assert "zz" not in expr


def test_a_quoted_literal_escapes_and_refuses_what_it_cannot_escape() -> None:
    assert quote('a"b\\c\nd') == '"a\\"b\\\\c\\nd"'
    with pytest.raises(ValidationError, match="control character"):
        quote("bell\x07")


def test_deletions_and_erasures_reach_the_collection(memory: rh.RehearsalMemory) -> None:
    index = _milvus(memory)
    memory.delete([0, 1, 2])
    memory.forget(tenant="globex")
    assert index.ids().tolist() == list(range(3, 30))
    assert len(memory) == len(index) == 27
    query = unit_vectors(np.random.default_rng(2), 4)
    found = {hit.id for row in memory.search_vectors(query, 60) for hit in row}
    assert found == set(range(3, 30))
    assert memory.verify()["entries"] == 27


def test_a_search_skips_ids_the_record_store_no_longer_holds(memory: rh.RehearsalMemory) -> None:
    index = _milvus(memory)
    _, vectors = index.load_all()
    # Remove rows from the records only, as if the collection lagged behind (another writer's commit).
    records = memory._records
    with records.transaction():
        records.remove(list(range(10)), generation=records.bump_generation())
    scores, found = index.search(vectors[:3], 5)
    assert not set(found.ravel().tolist()) & set(range(10))
    assert (found >= 0).all()  # asked wider instead of coming back short
    assert (np.diff(scores, axis=1) <= 1e-6).all()


def test_a_commit_the_collection_missed_is_replayed_on_open(
    tmp_path: Path, keys: KeyRing, milvus_url: str
) -> None:
    folder = tmp_path / "stores"
    folder.mkdir()
    stores = create_backends(folder, keys=keys, dim=MEMORY_DIM, vectors=milvus_url)
    vectors = unit_vectors(np.random.default_rng(3), 6)
    for _ in range(2):  # the second round: ids 6..11; neither is told to the index (a crash after commit)
        with stores.records.transaction():
            gen = stores.records.bump_generation()
            ids = stores.records.allocate_ids(6)
            stores.records.insert(
                ids,
                tenant="acme",
                metadata=[{"task": "t"}] * 6,
                sources=[None] * 6,
                vectors=stores.vectors.seal("acme", ids, vectors),
                generation=gen,
            )
    assert len(stores.vectors) == 0
    stores.close()
    for _ in range(2):  # opening twice upserts the same rows again: no duplicates
        again = open_backends(folder, keys=keys, dim=MEMORY_DIM, read_only=False)
        try:
            assert again.vectors.ids().tolist() == list(range(12))
            assert len(again.vectors) == 12
            assert again.vectors.generation == 2
        finally:
            again.close()


def test_a_reader_sees_what_the_writer_published_up_to_its_own_view(memory: rh.RehearsalMemory) -> None:
    reader = memory.reader()()
    try:
        assert len(reader) == 60
        memory.add(["late"], metadata=[{"task": "late"}], vectors=unit_vectors(np.random.default_rng(4), 1))
        hits = reader.search_vectors(unit_vectors(np.random.default_rng(5), 1), 100)
        assert {hit.id for hit in hits[0]} == set(range(61))  # a search catches the reader up
        assert reader.verify()["entries"] == 61
    finally:
        reader.close()


def test_opening_finds_the_recorded_server_and_refuses_a_mismatch(
    memory: rh.RehearsalMemory, location: str, tmp_path: Path, keys: KeyRing, milvus_url: str
) -> None:
    memory.close()
    again = rh.RehearsalMemory.open(location, keys=keys)
    try:
        assert again.stats()["index_spec"].startswith("Milvus")
        assert len(again) == 60
    finally:
        again.close()
    plain = rh.RehearsalMemory.create(tmp_path / "p", keys=keys, dim=MEMORY_DIM, encoder_name="synthetic")
    plain.close()
    with pytest.raises(ConfigError, match="keeps its vectors in its folder"):
        rh.RehearsalMemory.open(tmp_path / "p", keys=keys, vectors=milvus_url)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("qdrant://h:1", "no vector index for 'qdrant'"),
        ("milvus://host", "needs a host and a port"),
        ("milvus://u:s3cret@host:1/db", "takes no path"),
        ("milvus://u:s3cret@host:99999", "bad port"),
    ],
)
def test_a_bad_vectors_location_is_refused_before_anything_is_written(
    tmp_path: Path, keys: KeyRing, url: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        rh.RehearsalMemory.create(tmp_path / "m", keys=keys, dim=MEMORY_DIM, encoder_name="x", vectors=url)
    assert "s3cret" not in str(caught.value)
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())


def test_a_location_keeps_its_password_out_of_reprs() -> None:
    location = parse_location("milvus://me:s3cret@db.example:19530")
    assert location.uri == "http://db.example:19530"
    assert (location.user, location.password) == ("me", "s3cret")
    assert "s3cret" not in repr(location) + str(location)


def test_an_unreachable_server_is_a_storage_error(tmp_path: Path, keys: KeyRing) -> None:
    with pytest.raises(StorageError, match=r"connecting to Milvus at milvus://127\.0\.0\.1:9"):
        rh.RehearsalMemory.create(
            tmp_path / "m", keys=keys, dim=MEMORY_DIM, encoder_name="x", vectors="milvus://127.0.0.1:9"
        )


def test_not_equal_counts_a_missing_task_or_label_explicitly() -> None:
    # milvus-lite counts a null as "not in" any list while Milvus's "!=" does not, so the parity test above
    # cannot tell whether the expression says so itself; the SQL backends' rule must not rest on either.
    expr = compile_where(parse_where({"task": {"$ne": "a"}, "label": {"$nin": [1, "b"]}}))
    assert expr is not None
    for column in ("task", "label_int", "label_key"):
        assert f"({column} is null or {column} not in" in expr


def test_a_collection_ahead_of_restored_records_is_rebuilt_from_them(
    memory: rh.RehearsalMemory, location: str, keys: KeyRing
) -> None:
    index = _milvus(memory)
    vector = unit_vectors(np.random.default_rng(6), 1)[0]
    # What a record store restored from an older copy meets: rows and a generation it never had.
    index._client.upsert(
        index.collection,
        [
            {
                "id": 999,
                "vector": vector,
                "gen": 1,
                "tenant": "acme",
                "task": None,
                "label_int": None,
                "label_key": None,
                "tags": [],
            }
        ],
    )
    index._publish(50)
    memory.close()
    again = rh.RehearsalMemory.open(location, keys=keys)
    try:
        assert _milvus(again).ids().tolist() == list(range(60))
        assert again.generation == again._records.generation
        assert again.verify()["entries"] == 60
    finally:
        again.close()
