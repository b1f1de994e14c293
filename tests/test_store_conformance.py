"""What every backend must do behind the store protocols (``rehearsal.store.protocols``).

Each test takes the ``stores`` fixture: a backend opened through its factory in ``BACKENDS``. A new backend
(PostgreSQL, Milvus) adds a factory there, or a conftest that extends ``BACKENDS``, and runs this suite.
Server backends run against the test run's own PostgreSQL (``postgres_server``), one database per test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import MEMORY_DIM, unit_vectors

from rehearsal.crypto.keys import KeyRing
from rehearsal.errors import IntegrityError, NotFoundError, WrongKeyError
from rehearsal.store.layout import new_manifest
from rehearsal.store.registry import (
    Backends,
    create_backends,
    create_server_backends,
    open_backends,
    open_server_backends,
)
from rehearsal.store.where import parse_where


@pytest.fixture(scope="module")
def ring() -> KeyRing:
    return KeyRing.generate()


Opened = tuple[Backends, Callable[[], Backends]]  # the stores, and how to open them again


def _embedded(request: pytest.FixtureRequest, folder: Path, keys: KeyRing | None) -> Opened:
    folder.mkdir()
    created = create_backends(folder, keys=keys, dim=MEMORY_DIM)
    return created, lambda: open_backends(folder, keys=keys, dim=MEMORY_DIM, read_only=False)


def _sqlite_milvus(request: pytest.FixtureRequest, folder: Path, keys: KeyRing | None) -> Opened:
    """SQLite records and texts, vectors in a collection on the session's milvus-lite server."""
    url = request.getfixturevalue("milvus_url")
    folder.mkdir()
    created = create_backends(folder, keys=keys, dim=MEMORY_DIM, vectors=url)
    return created, lambda: open_backends(folder, keys=keys, dim=MEMORY_DIM, read_only=False)


def _postgres_pgvector(request: pytest.FixtureRequest, folder: Path, keys: KeyRing | None) -> Opened:
    url = request.getfixturevalue("postgres_url")
    manifest = new_manifest(embedding_only=False, encrypted=keys is not None, encoder=("test", MEMORY_DIM))
    created = create_server_backends(url, keys=keys, dim=MEMORY_DIM, manifest=manifest)
    return created, lambda: open_server_backends(
        url, keys=keys, dim=MEMORY_DIM, read_only=False, manifest=manifest
    )


def _postgres_milvus(request: pytest.FixtureRequest, folder: Path, keys: KeyRing | None) -> Opened:
    """PostgreSQL records and texts, vectors in a collection on the session's milvus-lite server."""
    url = request.getfixturevalue("postgres_url")
    milvus = request.getfixturevalue("milvus_url")
    manifest = new_manifest(embedding_only=False, encrypted=keys is not None, encoder=("test", MEMORY_DIM))
    created = create_server_backends(url, keys=keys, dim=MEMORY_DIM, manifest=manifest, vectors=milvus)
    return created, lambda: open_server_backends(
        url, keys=keys, dim=MEMORY_DIM, read_only=False, manifest=manifest
    )


# Each factory makes a backend's stores; ``request`` gives it the server fixtures it needs.
BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path, KeyRing | None], Opened]] = {
    "sqlite+faiss": _embedded,
    "sqlite+milvus": _sqlite_milvus,
    "postgresql+pgvector": _postgres_pgvector,
    "postgresql+milvus": _postgres_milvus,
}


@pytest.fixture(params=sorted(BACKENDS))
def backend(
    request: pytest.FixtureRequest, tmp_path: Path, ring: KeyRing
) -> Iterator[tuple[Backends, Callable[[], Backends]]]:
    stores, reopen = BACKENDS[request.param](request, tmp_path / "stores", ring)
    yield stores, reopen
    stores.close()


@pytest.fixture
def stores(backend: Opened) -> Backends:
    return backend[0]


def _add(stores: Backends, n: int, *, tenant: str = "acme", task: str = "a", seed: int = 0) -> list[int]:
    """Commit ``n`` entries the way the facade does: records, texts and sealed vectors in one transaction."""
    vectors = unit_vectors(np.random.default_rng(seed), n)
    with stores.records.transaction():
        gen = stores.records.bump_generation()
        ids = stores.records.allocate_ids(n)
        assert stores.keyed is not None
        stores.keyed.put(ids, [f"text {i}" for i in ids], tenant=tenant)
        stores.records.insert(
            ids,
            tenant=tenant,
            metadata=[{"task": task, "label": i % 3, "tags": ["x"] if i % 2 else []} for i in ids],
            sources=[None] * n,
            vectors=stores.vectors.seal(tenant, ids, vectors),
            generation=gen,
        )
    stores.vectors.applied(gen, [], ids, vectors)
    return ids


def _remove(stores: Backends, ids: list[int]) -> None:
    with stores.records.transaction():
        gen = stores.records.bump_generation()
        assert stores.keyed is not None
        stores.keyed.delete(ids)
        stores.records.remove(ids, generation=gen)
    stores.vectors.applied(gen, ids, [], None)


# -- record store ----------------------------------------------------------------------------------------


def test_ids_are_allocated_once_and_never_reused(stores: Backends) -> None:
    first = _add(stores, 5)
    _remove(stores, first)
    second = _add(stores, 5, seed=1)
    assert first == [0, 1, 2, 3, 4]
    assert second == [5, 6, 7, 8, 9]


def test_every_commit_bumps_the_generation(stores: Backends) -> None:
    before = stores.records.generation
    _add(stores, 3)
    _remove(stores, [0])
    assert stores.records.generation == before + 2


def test_a_failed_transaction_leaves_nothing(stores: Backends) -> None:
    _add(stores, 3)

    def failing_commit() -> None:
        with stores.records.transaction():
            stores.records.bump_generation()
            stores.records.remove([0, 1, 2], generation=99)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        failing_commit()
    assert stores.records.count() == 3
    assert stores.records.generation == 1


def test_changes_since_lists_added_and_removed_ids(stores: Backends) -> None:
    _add(stores, 4)
    mark = stores.records.generation
    later = _add(stores, 3, seed=1)
    _remove(stores, [1, later[0]])
    added, removed = stores.records.changes_since(mark)
    assert added == later[1:]
    assert removed == [1, later[0]]
    assert stores.records.added_count_since(mark) == 2


def test_rows_carry_the_metadata_given(stores: Backends) -> None:
    ids = _add(stores, 3, tenant="globex", task="b")
    rows = stores.records.rows(ids)
    assert [rows[i].task for i in ids] == ["b"] * 3
    assert [rows[i].tenant for i in ids] == ["globex"] * 3
    assert rows[ids[1]].metadata()["tags"] == ["x"]
    assert stores.records.ids_of_tenant("globex") == ids


def test_the_where_tree_selects_what_the_mapping_says(stores: Backends) -> None:
    _add(stores, 6, task="a")
    _add(stores, 6, task="b", seed=1)
    records = stores.records
    assert records.matching_ids(parse_where({"task": "b"})) == list(range(6, 12))
    assert records.matching_ids(parse_where({"label": {"$in": [0]}, "task": "a"})) == [0, 3]
    assert records.matching_ids(parse_where({"tags": "x", "id": {"$lt": 6}})) == [1, 3, 5]
    assert records.matching_ids(parse_where({"task": {"$nin": []}})) == list(range(12))
    assert records.matching_ids(parse_where({"task": {"$in": []}})) == []


def test_max_gen_hides_entries_added_later(stores: Backends) -> None:
    _add(stores, 2)
    mark = stores.records.generation
    _add(stores, 2, seed=1)
    assert stores.records.matching_ids(None, max_gen=mark) == [0, 1]
    assert stores.records.group_ids("task", None, max_gen=mark) == {"a": [0, 1]}


def test_meta_values_round_trip_inside_a_commit(stores: Backends) -> None:
    with stores.records.transaction():
        stores.records.set_meta("policy.x", '{"seen": 3}')
    assert stores.records.get_meta("policy.x") == '{"seen": 3}'
    assert stores.records.get_meta("absent", "default") == "default"


# -- text store and sealer ---------------------------------------------------------------------------------


def test_texts_come_back_and_deleted_ones_are_gone(stores: Backends) -> None:
    ids = _add(stores, 4)
    assert stores.keyed is not None
    assert stores.keyed.get(ids[:2]) == ["text 0", "text 1"]
    _remove(stores, [ids[0]])
    assert stores.keyed.get_present(ids) == {1: "text 1", 2: "text 2", 3: "text 3"}
    with pytest.raises(NotFoundError):
        stores.keyed.get([ids[0]])


def test_shredding_a_tenant_makes_its_texts_unreadable(stores: Backends) -> None:
    _add(stores, 2, tenant="acme")
    other = _add(stores, 2, tenant="globex", seed=1)
    assert stores.keyed is not None
    stores.keyed.shred("acme")
    assert stores.keyed.tenants() == ["globex"]
    assert stores.keyed.get_present([0, 1, *other]) == {
        other[0]: f"text {other[0]}",
        other[1]: f"text {other[1]}",
    }


def test_a_sealed_payload_is_bound_to_tenant_id_and_purpose(stores: Backends) -> None:
    _add(stores, 1, tenant="acme")
    _add(stores, 1, tenant="globex", seed=1)
    assert stores.keyed is not None
    sealed = stores.keyed.seal("acme", 7, b"payload", purpose="vector")
    assert stores.keyed.open_sealed("acme", 7, sealed, purpose="vector") == b"payload"
    for tenant, record, purpose in (("globex", 7, "vector"), ("acme", 8, "vector"), ("acme", 7, "index")):
        with pytest.raises((IntegrityError, WrongKeyError)):
            stores.keyed.open_sealed(tenant, record, sealed, purpose=purpose)


def test_rotating_the_master_key_keeps_every_text(stores: Backends) -> None:
    ids = _add(stores, 3)
    assert stores.keyed is not None
    stores.keyed.rotate_master_key(KeyRing.generate())
    assert stores.keyed.get(ids) == ["text 0", "text 1", "text 2"]
    assert stores.keyed.verify() == 3


# -- vector index ----------------------------------------------------------------------------------------


def test_the_index_finds_each_stored_vector_first(stores: Backends) -> None:
    ids = _add(stores, 20)
    _, vectors = stores.vectors.load_all()
    scores, found = stores.vectors.search(vectors[:5], 3)
    assert found[:, 0].tolist() == ids[:5]
    assert np.allclose(scores[:, 0], 1.0, atol=1e-5)
    assert len(stores.vectors) == 20
    assert stores.vectors.generation == stores.records.generation


def test_allowed_ids_restrict_the_search(stores: Backends) -> None:
    _add(stores, 20)
    _, vectors = stores.vectors.load_all()
    _, found = stores.vectors.search(vectors[:2], 5, allowed_ids=np.asarray([3, 4], dtype=np.int64))
    assert {int(i) for i in found.ravel() if i >= 0} <= {3, 4}


def test_a_reopened_index_holds_every_committed_vector(
    backend: tuple[Backends, Callable[[], Backends]],
) -> None:
    stores, reopen = backend
    _add(stores, 10)
    stores.vectors.checkpoint()
    _remove(stores, [2])
    later = _add(stores, 5, seed=1)  # after the snapshot: replayed from the record store on open
    generation = stores.records.generation
    stores.close()
    again = reopen()
    try:
        assert sorted(again.vectors.ids().tolist()) == sorted({*range(10), *later} - {2})
        assert again.vectors.generation == generation
    finally:
        again.close()


def test_a_dropped_id_is_no_longer_returned(stores: Backends) -> None:
    _add(stores, 5)
    _, vectors = stores.vectors.load_all()
    stores.vectors.drop([0])
    _, found = stores.vectors.search(vectors[:1], 5)
    assert 0 not in found.ravel().tolist()


def test_records_and_index_agree_after_mixed_commits(stores: Backends) -> None:
    _add(stores, 8)
    _remove(stores, [1, 5])
    _add(stores, 4, seed=2)
    assert sorted(stores.vectors.ids().tolist()) == sorted(stores.records.matching_ids(None))
