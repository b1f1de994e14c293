"""A memory on PostgreSQL + pgvector through the public API: the same calls and guarantees as a folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest
from conftest import MEMORY_DIM, unit_vectors

from rehearsal.crypto.keys import KeyRing
from rehearsal.errors import (
    ConfigError,
    MissingKeyError,
    NotFoundError,
    ReadOnlyError,
    StorageError,
    StoreFormatError,
    ValidationError,
    WrongKeyError,
)
from rehearsal.memory.facade import RehearsalMemory


def _create(url: str, keys: KeyRing | None, **kw: object) -> RehearsalMemory:
    return RehearsalMemory.create(url, keys=keys, dim=MEMORY_DIM, encoder_name="synthetic", **kw)  # type: ignore[arg-type]


@pytest.fixture
def memory(postgres_url: str, keys: KeyRing) -> Iterator[RehearsalMemory]:
    mem = _create(postgres_url, keys)
    rng = np.random.default_rng(0)
    for t, task in enumerate("abc"):
        meta = [{"task": task, "label": 2 * t + (i % 2), "tags": ["odd"] if i % 2 else []} for i in range(20)]
        texts = [f"{task} example {i}" for i in range(20)]
        mem.add(texts, vectors=unit_vectors(rng, 20), metadata=meta, tenant="acme" if t < 2 else "globex")
    yield mem
    mem.close()


def test_a_memory_is_created_and_searched_by_url(memory: RehearsalMemory) -> None:
    assert len(memory) == 60
    _, vectors = memory._vectors.load_all()
    hits = memory.search_vectors(vectors[:3], k=5)
    assert [h[0].id for h in hits] == [0, 1, 2]
    assert hits[0][0].metadata["task"] == "a"
    assert memory.get_texts([0, 41]) == ["a example 0", "c example 1"]


def test_a_filter_runs_on_the_server(memory: RehearsalMemory) -> None:
    _, vectors = memory._vectors.load_all()
    hits = memory.search_vectors(vectors[:4], k=10, where={"task": "b", "tags": "odd"})
    assert all(h.metadata["task"] == "b" and "odd" in h.metadata["tags"] for row in hits for h in row)
    assert all(len(row) == 10 for row in hits)  # 10 of the task's 10 odd entries: the scan went on
    assert memory.search_vectors(vectors[:1], k=5, where={"label": {"$in": []}}) == [[]]


def test_delete_and_forget_remove_rows_texts_and_vectors_together(memory: RehearsalMemory) -> None:
    memory.delete([0, 1])
    assert memory.texts_by_id([0, 1, 2]) == {2: "a example 2"}
    assert memory.forget(tenant="globex") == 20
    assert len(memory) == 38
    assert memory.ids(where={"tenant": "globex"}) == []
    _, vectors = memory._vectors.load_all()
    found = {h.id for row in memory.search_vectors(vectors, k=38) for h in row}
    assert found == set(range(2, 40))
    with pytest.raises(NotFoundError):
        memory.get_texts([45])
    assert memory.verify()["entries"] == 38
    assert memory._records.count() == len(memory.ids()) == 38  # the kept count follows every commit


def test_the_server_holds_ciphertext_only(memory: RehearsalMemory, postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as conn:
        blobs = [bytes(r[0]) for r in conn.execute("SELECT sealed FROM rehearsal.vault_records").fetchall()]
        wrapped = [bytes(r[0]) for r in conn.execute("SELECT wrapped FROM rehearsal.vault_keys").fetchall()]
    assert len(blobs) == 60
    assert not any(b"example" in blob for blob in blobs)
    assert all(len(w) > 32 for w in wrapped)  # wrapped, not raw 32-byte data keys


def test_a_reopened_memory_needs_its_key(memory: RehearsalMemory, postgres_url: str, keys: KeyRing) -> None:
    memory.close()
    with pytest.raises(MissingKeyError):
        RehearsalMemory.open(postgres_url)
    with pytest.raises(WrongKeyError):
        RehearsalMemory.open(postgres_url, keys=KeyRing.generate())
    again = RehearsalMemory.open(postgres_url, keys=keys, read_only=True)
    try:
        assert len(again) == 60
        assert again.get_texts([20]) == ["b example 0"]
        with pytest.raises(ReadOnlyError):
            again.delete([0])
    finally:
        again.close()


def test_a_reader_sees_a_writers_later_commits(memory: RehearsalMemory) -> None:
    reader = memory.reader()()
    try:
        memory.add(["late"], vectors=unit_vectors(np.random.default_rng(9), 1), tenant="acme")
        memory.forget(tenant="globex")
        reader.refresh()
        assert len(reader) == 41
        assert reader.texts_by_id([60, 40]) == {60: "late"}
    finally:
        reader.close()


def test_the_password_never_shows(memory: RehearsalMemory, postgres_url: str) -> None:
    password = psycopg.conninfo.conninfo_to_dict(postgres_url)["password"]
    assert isinstance(password, str)
    assert password not in repr(memory)
    assert password not in str(memory.stats())
    assert str(memory.path).endswith("?schema=rehearsal")


def test_one_database_holds_several_memories_by_schema(postgres_url: str, keys: KeyRing) -> None:
    first = _create(postgres_url + "?schema=first", keys)
    second = _create(postgres_url + "?schema=second", None, embedding_only=True)
    try:
        first.add(["one"], vectors=unit_vectors(np.random.default_rng(0), 1))
        second.add(vectors=unit_vectors(np.random.default_rng(1), 2), sources=["s1", "s2"])
        assert (len(first), len(second)) == (1, 2)
        assert second.entries([0, 1])[1].source == "s2"
    finally:
        first.close()
        second.close()


def test_creating_over_an_existing_memory_is_refused(memory: RehearsalMemory, postgres_url: str) -> None:
    with pytest.raises(ValidationError, match="already exists"):
        _create(postgres_url, KeyRing.generate())


def test_opening_an_empty_schema_says_there_is_no_memory(postgres_url: str) -> None:
    with pytest.raises(StoreFormatError, match="no rehearsal memory"):
        RehearsalMemory.open(postgres_url + "?schema=nothing_here")


def test_a_bad_schema_name_is_a_config_error(postgres_url: str) -> None:
    with pytest.raises(ConfigError, match="schema"):
        RehearsalMemory.open(postgres_url + "?schema=Robert%27;drop")


def test_a_server_memory_has_no_folder(memory: RehearsalMemory) -> None:
    with pytest.raises(ConfigError, match="no folder"):
        _ = memory.folder
    assert memory.stats()["files"] == {}
    assert memory.stats()["disk_bytes"] is None  # not 0: the server holds the bytes, not this machine


def test_filters_select_what_sqlite_selects(memory: RehearsalMemory, tmp_path: Path, keys: KeyRing) -> None:
    """The same entries in both backends; every filter kind must pick the same ids."""
    local = RehearsalMemory.create(tmp_path / "m", keys=keys, dim=MEMORY_DIM, encoder_name="synthetic")
    rng = np.random.default_rng(0)
    for t, task in enumerate("abc"):
        meta = [{"task": task, "label": 2 * t + (i % 2), "tags": ["odd"] if i % 2 else []} for i in range(20)]
        texts = [f"{task} example {i}" for i in range(20)]
        local.add(texts, vectors=unit_vectors(rng, 20), metadata=meta, tenant="acme" if t < 2 else "globex")
    extra = [{"label": "cat", "task": "7"}, {}]  # a named label; no task or label at all
    local.add(["named", "bare"], vectors=unit_vectors(rng, 2), metadata=extra)
    memory.add(["named", "bare"], vectors=unit_vectors(rng, 2), metadata=extra)
    filters = [
        {"task": "b"},
        {"task": {"$ne": "b"}},
        {"task": 7},
        {"label": {"$in": [1, "cat"]}},
        {"label": {"$nin": [0, 1, 2]}},
        {"label": {"$gte": 2, "$lt": 4}},
        {"label": "cat"},
        {"tags": "odd", "tenant": "globex"},
        {"tags": {"$nin": ["odd"]}},
        {"id": {"$gt": 50}},
        {"id": {"$in": [1, 5, 99]}},
        {"id": {"$nin": [1, 5]}},
        {"tenant": {"$in": []}},
        {"task": {"$nin": []}},
    ]
    try:
        for where in filters:
            assert memory.ids(where=where) == local.ids(where=where), where
        assert memory.group_ids("label") == local.group_ids("label")
        assert memory.stats()["tasks"] == local.stats()["tasks"]
    finally:
        local.close()


def test_the_hnsw_index_is_built_at_checkpoint_and_keeps_filtered_search_full(
    postgres_url: str, keys: KeyRing, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("rehearsal.store.postgres.vectors.INDEX_AT", 500)
    rng = np.random.default_rng(3)
    mem = _create(postgres_url, keys)
    try:
        n = 3000
        meta = [{"tags": ["rare"] if i % 100 == 0 else []} for i in range(n)]  # 1%: 30 entries
        mem.add([f"t{i}" for i in range(n)], vectors=unit_vectors(rng, n), metadata=meta)
        assert "exact" in mem.stats()["index_spec"]
        mem.checkpoint()
        assert "HNSW" in mem.stats()["index_spec"]
        _, vectors = mem._vectors.load_all()
        assert [row[0].id for row in mem.search_vectors(vectors[:5], k=3)] == [0, 1, 2, 3, 4]
        # 30 matching of 3000: an HNSW scan that stopped at its ef_search candidates would find ~1 per query.
        # At this size the planner would rather scan the table; at scale it takes the index, as here.
        mem._records.conn.execute("SET enable_seqscan = off")
        plan = mem._records.conn.execute(
            "EXPLAIN SELECT id FROM entries WHERE tags && %s::text[] ORDER BY embedding <#> %s LIMIT 10",
            (["rare"], vectors[0]),
        ).fetchall()
        assert "entries_embedding" in str(plan)
        hits = mem.search_vectors(unit_vectors(rng, 8), k=10, where={"tags": "rare"})
        assert all(len(row) == 10 and all("rare" in h.metadata["tags"] for h in row) for row in hits)
        mem.add(["late"], vectors=unit_vectors(rng, 1), metadata=[{"tags": ["rare"]}])  # into the graph
        assert mem.ids(where={"tags": "rare"})[-1] == n
    finally:
        mem.close()


def test_two_writers_on_one_memory_see_each_others_commits(memory: RehearsalMemory, keys: KeyRing) -> None:
    other = RehearsalMemory.open(memory._location, keys=keys)  # a second writer: the server orders them
    try:
        rng = np.random.default_rng(5)
        mine = memory.add(["mine"], vectors=unit_vectors(rng, 1), metadata=[{"task": "z"}])
        theirs = other.add(["theirs"], vectors=unit_vectors(rng, 1), metadata=[{"task": "z"}])
        assert theirs[0] == mine[0] + 1  # ids are allocated once across writers
        assert memory.generation == other.generation
        assert len(memory) == len(other) == 62
        assert memory.ids(where={"task": "z"}) == [*mine, *theirs]
        assert memory.get_texts(theirs) == ["theirs"]
    finally:
        other.close()


def test_upsert_replaces_by_external_id_on_the_server(memory: RehearsalMemory) -> None:
    rng = np.random.default_rng(6)
    meta = [{"doc": "a-1"}, {"doc": 7}]
    first, _ = memory.upsert(["one", "two"], key="doc", metadata=meta, vectors=unit_vectors(rng, 2))
    again, replaced = memory.upsert(
        ["one v2", "seven as text"],
        key="doc",
        metadata=[{"doc": "a-1"}, {"doc": "7"}],
        vectors=unit_vectors(rng, 2),
    )
    assert replaced == [first[0]]  # "7" is not 7: the int-keyed record stays
    assert memory.texts_by_id([*first, *again]) == {
        first[1]: "two",
        again[0]: "one v2",
        again[1]: "seven as text",
    }


def test_a_url_without_its_password_says_where_the_password_goes(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", "/nonexistent/pgpass")
    user_part, _, rest = postgres_url.partition("@")
    bare = user_part.rsplit(":", 1)[0] + "@" + rest
    with pytest.raises(StorageError, match="PGPASSWORD"):
        RehearsalMemory.open(bare)
