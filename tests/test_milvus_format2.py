"""The Milvus vector index under the record stores' format-2 rules (issue 13 on top of issue 14): the
collection holds the vectors exactly as they rest in the records (float16 in a folder's catalog), and a
forget the collection missed (its writer killed after the commit) is never served and is finished, deleted
and compacted, by the next writer's open."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import MEMORY_DIM, unit_vectors

import rehearsal as rh
from rehearsal.crypto.keys import KeyRing
from rehearsal.store.milvus.index import ERASED_PROPERTY, MilvusIndex
from rehearsal.store.protocols import ERASE_META_KEY

GLOBEX = list(range(30, 60))


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
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
    for tenant in ("acme", "globex"):
        mem.add([f"{tenant} {i}" for i in range(30)], vectors=unit_vectors(rng, 30), tenant=tenant)
    yield mem
    mem.close()


def _milvus(mem: rh.RehearsalMemory) -> MilvusIndex:
    index = mem._vectors
    assert isinstance(index, MilvusIndex)
    return index


def _in_collection(index: MilvusIndex, ids: list[int]) -> set[int]:
    found = index._client.query(index.collection, filter=f"id in {ids}", output_fields=["id"])
    return {int(row["id"]) for row in found}


def test_the_collection_holds_the_vectors_as_the_records_keep_them(memory: rh.RehearsalMemory) -> None:
    index = _milvus(memory)
    ids, at_rest = index.load_all()  # what any handle reads back from the record store
    found = index._client.query(index.collection, filter="id >= 0", output_fields=["id", "vector"])
    served = {int(row["id"]): np.asarray(row["vector"], dtype=np.float32) for row in found}
    assert sorted(served) == ids.tolist()
    assert all(np.array_equal(served[int(i)], at_rest[pos]) for pos, i in enumerate(ids))


def test_a_folder_memory_keeps_float16_vectors_beside_milvus(
    tmp_path: Path, keys: KeyRing, milvus_url: str
) -> None:
    with rh.RehearsalMemory.create(
        tmp_path / "m", keys=keys, dim=MEMORY_DIM, encoder_name="synthetic", vectors=milvus_url
    ) as mem:
        mem.add(["one"], vectors=unit_vectors(np.random.default_rng(1), 1))
        (row,) = mem._records.vectors_of([0])
        opened = mem._keyed.open_sealed("default", 0, row[2], purpose="vector")  # type: ignore[union-attr]
    assert len(opened) == MEMORY_DIM * 2


def test_a_forget_the_collection_missed_is_never_served_and_is_finished_by_the_next_open(
    memory: rh.RehearsalMemory, location: str, keys: KeyRing, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = _milvus(memory)
    # The writer dies after the forget commits, before the collection hears of it.
    monkeypatch.setattr(index, "applied", lambda *args, **kwargs: None)
    monkeypatch.setattr(index, "checkpoint", lambda *args, **kwargs: None)
    memory.forget(tenant="globex")
    assert _in_collection(index, GLOBEX) == set(GLOBEX)  # still on the server
    reader = memory.reader()()  # the writer still holds the memory: the reader cannot repair it
    try:
        queries = unit_vectors(np.random.default_rng(2), 4)
        assert not {hit.id for row in reader.search_vectors(queries, 60) for hit in row} & set(GLOBEX)
        assert not set(_milvus(reader).ids().tolist()) & set(GLOBEX)
    finally:
        reader.close()
    memory.close()
    again = rh.RehearsalMemory.open(location, keys=keys)
    try:
        fresh = _milvus(again)
        assert _in_collection(fresh, GLOBEX) == set()
        assert not fresh.holds_erased()
        properties = fresh._client.describe_collection(fresh.collection)["properties"]
        assert properties[ERASED_PROPERTY] == again._records.get_meta(ERASE_META_KEY)
        assert len(again) == len(fresh) == 30
    finally:
        again.close()


def test_a_reader_of_a_folder_memory_finishes_a_forget_its_writer_left(
    tmp_path: Path, keys: KeyRing, milvus_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    location = tmp_path / "m"
    mem = rh.RehearsalMemory.create(location, keys=keys, dim=MEMORY_DIM, encoder_name="s", vectors=milvus_url)
    mem.add(["a", "b"], vectors=unit_vectors(np.random.default_rng(3), 2), tenant="acme")
    mem.add(["c"], vectors=unit_vectors(np.random.default_rng(4), 1), tenant="globex")
    index = _milvus(mem)
    monkeypatch.setattr(index, "applied", lambda *args, **kwargs: None)
    monkeypatch.setattr(index, "checkpoint", lambda *args, **kwargs: None)
    mem.forget(tenant="globex")
    assert _in_collection(index, [2]) == {2}
    mem.close()
    reader = rh.RehearsalMemory.open(location, keys=keys, read_only=True)  # no writer: it repairs
    try:
        assert _in_collection(_milvus(reader), [2]) == set()
        assert not _milvus(reader).holds_erased()
        assert len(reader) == 2
    finally:
        reader.close()
