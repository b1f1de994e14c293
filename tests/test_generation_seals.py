"""Generation seals (rehearsal.store.sqlite.seals): a handle's bulk check of every row's metadata runs on
one tag per generation, and never lets through what the row tags would have caught -- including a row
edited after the handle's first verified query, and a row edited before a writer re-seals its generation."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from rehearsal import IntegrityError, KeyRing, RehearsalMemory
from rehearsal.store.sqlite.records import SqliteRecords

DIM = 16


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def vectors(rng: np.random.Generator) -> np.ndarray:
    return _unit(rng, 30)


@pytest.fixture
def store(tmp_path: Path, keys: KeyRing, vectors: np.ndarray) -> Path:
    """Three generations of ten rows (ids 0-9, 10-19, 20-29); tasks t0/t1 alternate, labels i % 3."""
    path = tmp_path / "mem"
    with RehearsalMemory.create(path, keys=keys, dim=DIM, encoder_name="synthetic-16") as mem:
        for start in (0, 10, 20):
            rows = range(start, start + 10)
            mem.add(
                [f"text {i}" for i in rows],
                vectors=vectors[start : start + 10],
                metadata=[{"task": f"t{i % 2}", "label": i % 3, "note": f"é{i}\n"} for i in rows],
            )
    return path


def _sql(path: Path, statement: str) -> None:
    conn = sqlite3.connect(path / "memory.sqlite", isolation_level=None)
    conn.execute(statement)
    conn.close()


def _catalog(mem: RehearsalMemory) -> SqliteRecords:
    records = mem._records
    assert isinstance(records, SqliteRecords)
    return records


def test_a_sealed_store_checks_no_row_one_by_one(store: Path, keys: KeyRing, vectors: np.ndarray) -> None:
    with RehearsalMemory.open(store, keys=keys, read_only=True) as mem:
        catalog = _catalog(mem)
        assert catalog.seals.exists()
        assert catalog.check_rows_since() == 0  # every generation matched its seal
        hits = mem.search_vectors(vectors[3:4], 5, where={"task": "t1"})[0]
        assert hits
        assert all(h.metadata["task"] == "t1" for h in hits)


def test_a_row_edited_after_the_first_verified_query_is_still_caught(
    store: Path, keys: KeyRing, vectors: np.ndarray
) -> None:
    with RehearsalMemory.open(store, keys=keys, read_only=True) as mem:
        assert mem.search_vectors(vectors[13:14], 3, where={"task": "t0"})[0]  # verifies every row
        # Behind the open handle: row 13 (a t1 row) is moved out of the t1 filter.
        _sql(store, "UPDATE entries SET task = 't0' WHERE id = 13")
        with pytest.raises(IntegrityError, match="catalog row 13"):
            mem.search_vectors(vectors[13:14], 3, where={"task": "t1"})


def test_a_row_edited_in_a_generation_added_after_the_first_query_is_caught(
    store: Path, keys: KeyRing, vectors: np.ndarray, rng: np.random.Generator
) -> None:
    with RehearsalMemory.open(store, keys=keys, read_only=True) as reader:
        assert reader.search_vectors(vectors[:1], 3, where={"task": "t0"})[0]
        with RehearsalMemory.open(store, keys=keys) as writer:
            writer.add(["late"], vectors=_unit(rng, 1), metadata=[{"task": "t1"}])  # id 30
        _sql(store, "UPDATE entries SET task = 't0' WHERE id = 30")
        with pytest.raises(IntegrityError, match="catalog row 30"):
            reader.search_vectors(vectors[:1], 3, where={"task": "t1"})


@pytest.mark.parametrize(
    "damage",
    [
        "DELETE FROM gen_seals WHERE gen = 2",
        "UPDATE gen_seals SET tag = zeroblob(16) WHERE gen = 1",
        "UPDATE gen_seals SET gen = 9 WHERE gen = 3",
        "UPDATE gen_seals SET hi = hi - 1 WHERE gen = 2",  # the id range is a hint: one row left out
        "UPDATE gen_seals SET lo = NULL WHERE gen = 2",
        "DROP TABLE gen_seals",
    ],
)
def test_a_damaged_seal_only_costs_the_row_by_row_check(
    store: Path, keys: KeyRing, vectors: np.ndarray, damage: str
) -> None:
    with RehearsalMemory.open(store, keys=keys, read_only=True) as mem:
        expected = mem.search_vectors(vectors[5:6], 8, where={"label": 2})
    _sql(store, damage)
    with RehearsalMemory.open(store, keys=keys, read_only=True) as mem:
        assert _catalog(mem).check_rows_since() > 0
        assert mem.search_vectors(vectors[5:6], 8, where={"label": 2}) == expected
        mem.verify()


def test_a_damaged_seal_does_not_hide_an_edited_row(store: Path, keys: KeyRing, vectors: np.ndarray) -> None:
    _sql(store, "UPDATE entries SET label = 0 WHERE id = 17")  # label 2 -> 0: out of the filter below
    _sql(store, "DELETE FROM gen_seals WHERE gen = 2")
    with (
        RehearsalMemory.open(store, keys=keys, read_only=True) as mem,
        pytest.raises(IntegrityError, match="catalog row 17"),
    ):
        mem.search_vectors(vectors[17:18], 5, where={"label": 2})


def test_a_row_moved_into_another_generation_outside_its_seal_range_is_caught(
    store: Path, keys: KeyRing, vectors: np.ndarray
) -> None:
    # Row 25 (a t1 row of generation 3) is moved out of the t1 filter and into generation 2, whose seal
    # covers ids 10-19: the rows rendered from that range still match the seal, but the generation index
    # now holds 11 rows for it. Unchecked, the search below would leave row 25 out silently.
    _sql(store, "UPDATE entries SET added_gen = 2, task = 't0' WHERE id = 25")
    with (
        RehearsalMemory.open(store, keys=keys, read_only=True) as mem,
        pytest.raises(IntegrityError, match="catalog row 25"),
    ):
        mem.search_vectors(vectors[25:26], 3, where={"task": "t1"})


def test_a_widened_seal_range_still_verifies(store: Path, keys: KeyRing, vectors: np.ndarray) -> None:
    _sql(store, "UPDATE gen_seals SET lo = 0, hi = 1000 WHERE gen = 2")
    with RehearsalMemory.open(store, keys=keys, read_only=True) as mem:
        assert _catalog(mem).check_rows_since() == 0
        assert mem.group_ids("task")["t1"] == [i for i in range(30) if i % 2]


def test_a_writer_does_not_seal_in_a_row_edited_behind_its_back(
    store: Path, keys: KeyRing, vectors: np.ndarray
) -> None:
    _sql(store, "UPDATE entries SET task = 't0' WHERE id = 13")  # generation 2, with row 14 deleted below
    with RehearsalMemory.open(store, keys=keys) as mem, pytest.raises(IntegrityError, match="catalog row 13"):
        mem.delete([14])
    with (
        RehearsalMemory.open(store, keys=keys, read_only=True) as mem,
        pytest.raises(IntegrityError, match="catalog row 13"),
    ):
        mem.search_vectors(vectors[13:14], 3, where={"task": "t1"})


def test_deletes_and_forgets_keep_the_seals_current(
    store: Path, keys: KeyRing, vectors: np.ndarray, rng: np.random.Generator
) -> None:
    with RehearsalMemory.open(store, keys=keys) as mem:
        mem.delete([0, 11, 12])
        mem.delete(list(range(20, 30)))  # empties generation 3
        mem.add(["bob's"], vectors=_unit(rng, 1), metadata=[{"task": "t0"}], tenant="bob")
        mem.forget(tenant="bob")
    with RehearsalMemory.open(store, keys=keys, read_only=True) as mem:
        catalog = _catalog(mem)
        assert catalog.check_rows_since() == 0
        generations = {g for (g,) in catalog.conn.execute("SELECT gen FROM gen_seals")}
        assert generations == {1, 2}
        assert sorted(mem.group_ids("task")["t1"]) == [1, 3, 5, 7, 9, 13, 15, 17, 19]


def test_a_store_written_before_seals_is_sealed_by_its_next_writer(
    store: Path, keys: KeyRing, vectors: np.ndarray
) -> None:
    _sql(store, "DROP TABLE gen_seals")
    with RehearsalMemory.open(store, keys=keys, read_only=True) as mem:
        assert _catalog(mem).check_rows_since() == 30  # no seals: every row by its own tag
    with RehearsalMemory.open(store, keys=keys) as mem:
        assert _catalog(mem).seals.exists()
    with RehearsalMemory.open(store, keys=keys, read_only=True) as mem:
        assert _catalog(mem).check_rows_since() == 0
        mem.verify()


def test_a_writer_refuses_to_seal_an_edited_row_of_an_unsealed_store(store: Path, keys: KeyRing) -> None:
    _sql(store, "DROP TABLE gen_seals")
    _sql(store, "UPDATE entries SET tenant = 'mallory' WHERE id = 22")
    with pytest.raises(IntegrityError, match="catalog row 22"):
        RehearsalMemory.open(store, keys=keys).close()
