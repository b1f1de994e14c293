"""A server memory authenticates what it reads back (format 2, as a folder does): whoever can UPDATE the
server's tables cannot move a row to another tenant, flip a label or edit the generation, count or manifest
without the memory saying IntegrityError, whether the edit happens while it is closed or open."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import psycopg
import pytest
from conftest import MEMORY_DIM, unit_vectors

from rehearsal.crypto.keys import KeyRing
from rehearsal.errors import IntegrityError
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.store.authenticity import CatalogAuthenticator

N = 20


def _sql(url: str, statement: str, params: tuple[object, ...] = ()) -> None:
    """One statement as a server admin would run it (autocommit, on the memory's schema)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET search_path TO rehearsal, public")
        conn.execute(statement, params)


def _make(url: str, keys: KeyRing | None, vectors: np.ndarray) -> None:
    """alice owns ids 0..9, bob 10..19; labels i % 3, tasks t0/t1, a tag, an extra field, a source."""
    with RehearsalMemory.create(
        url, keys=keys, dim=MEMORY_DIM, encoder_name="synthetic", embedding_only=keys is None
    ) as mem:
        for tenant, rows in (("alice", range(N // 2)), ("bob", range(N // 2, N))):
            mem.add(
                None if keys is None else [f"secret of {tenant} {i}" for i in rows],
                vectors=vectors[list(rows)],
                metadata=[
                    {"label": i % 3, "task": f"t{i % 2}", "tags": ["x"], "note": f"n{i}"} for i in rows
                ],
                sources=[f"doc-{i}" for i in rows] if keys is None else None,
                tenant=tenant,
            )


@pytest.fixture
def vectors() -> np.ndarray:
    return unit_vectors(np.random.default_rng(7), N)


@pytest.fixture
def url(postgres_url: str, keys: KeyRing, vectors: np.ndarray) -> str:
    _make(postgres_url, keys, vectors)
    return postgres_url


@pytest.fixture
def live(url: str, keys: KeyRing) -> Iterator[RehearsalMemory]:
    mem = RehearsalMemory.open(url, keys=keys)
    yield mem
    mem.close()


# -- rows ------------------------------------------------------------------------------------------


def test_a_row_moved_to_another_tenant_is_refused(url: str, keys: KeyRing, vectors: np.ndarray) -> None:
    _sql(url, "UPDATE entries SET tenant = 'bob', label_int = 2 WHERE id = 1")  # id 1 is alice's
    with RehearsalMemory.open(url, keys=keys) as mem:
        with pytest.raises(IntegrityError, match="catalog row 1 fails authentication"):
            mem.search_vectors(vectors[1:2], 3, where={"tenant": "bob"})
        with pytest.raises(IntegrityError, match="catalog row 1"):
            mem.get_texts([1])
        with pytest.raises(IntegrityError, match="catalog row 1"):
            mem.verify()
        with pytest.raises(IntegrityError, match="catalog row 1"):
            mem.forget(tenant="bob")
        assert mem.texts_by_id([0]) == {0: "secret of alice 0"}  # the rows that check out still read


def test_a_row_moved_while_the_memory_is_open_is_refused(
    url: str, live: RehearsalMemory, vectors: np.ndarray
) -> None:
    assert live.search_vectors(vectors[1:2], 1, where={"tenant": "alice"})[0][0].id == 1
    _sql(url, "UPDATE entries SET tenant = 'bob' WHERE id = 1")
    with pytest.raises(IntegrityError, match="catalog row 1"):
        live.search_vectors(vectors[1:2], 3, where={"tenant": "bob"})
    with pytest.raises(IntegrityError, match="catalog row 1"):
        live.texts_by_id([1])
    with pytest.raises(IntegrityError, match="catalog row 1"):
        live.entries([1])


@pytest.mark.parametrize(
    "edit",
    [
        "task = 't9'",
        "label_int = 5",
        "label_int = NULL, label_text = '1'",  # the same digit as a name: a label's type is part of it
        "label_text = 'cat'",  # beside the int label, for a filter on the name to find
        "tags = '{y}'",
        "tags = '{x,y}'",
        """extra = '{"note": "forged"}'""",
        "source = 'elsewhere'",
        "added_gen = 1",
        "mac = (SELECT mac FROM entries WHERE id = 12)",  # another row's valid tag
        "id = 99",
    ],
)
def test_an_edited_column_is_an_integrity_error(
    url: str, keys: KeyRing, vectors: np.ndarray, edit: str
) -> None:
    _sql(url, f"UPDATE entries SET {edit} WHERE id = 13")
    with RehearsalMemory.open(url, keys=keys, read_only=True) as mem:
        with pytest.raises(IntegrityError, match="catalog row"):
            mem.verify()
        with pytest.raises(IntegrityError, match="catalog row"):
            mem.group_ids("label")
        if edit != "id = 99":
            with pytest.raises(IntegrityError, match="catalog row 13"):
                mem.entries([13])
            with pytest.raises(IntegrityError, match="catalog row 13"):
                mem.search_vectors(vectors[13:14], 2)


def test_a_row_edited_out_of_a_filter_is_not_silently_left_out(
    url: str, keys: KeyRing, vectors: np.ndarray
) -> None:
    _sql(url, "UPDATE entries SET task = 't0' WHERE id = 13")  # 13 is a t1 row: the filter skips it now
    with (
        RehearsalMemory.open(url, keys=keys, read_only=True) as mem,
        pytest.raises(IntegrityError, match="catalog row 13"),
    ):
        mem.search_vectors(vectors[13:14], 3, where={"task": "t1"})
    with (
        RehearsalMemory.open(url, keys=keys, read_only=True) as mem,
        pytest.raises(IntegrityError, match="catalog row 13"),
    ):
        mem.ids(where={"task": "t1"})


def test_a_row_another_writer_adds_is_checked_before_a_filtered_query(
    url: str, keys: KeyRing, live: RehearsalMemory, vectors: np.ndarray
) -> None:
    assert len(live.ids(where={"task": "t1"})) == 10  # this handle checked every row up to now
    with RehearsalMemory.open(url, keys=keys) as other:
        (new,) = other.add(["late"], vectors=vectors[:1], metadata=[{"task": "t1"}], tenant="bob")
    _sql(url, "UPDATE entries SET task = 't0' WHERE id = %s", (new,))
    with pytest.raises(IntegrityError, match=f"catalog row {new}"):
        live.search_vectors(vectors[:1], 3, where={"task": "t1"})


def test_an_added_row_is_an_integrity_error(url: str, keys: KeyRing) -> None:
    # A copy of a valid row under a fresh id (and the count raised to match): its tag names id 13.
    _sql(
        url,
        "INSERT INTO entries SELECT 50, tenant, task, label_int, label_text, tags, extra, source,"
        " embedding, added_gen, created_at, mac FROM entries WHERE id = 13",
    )
    _sql(url, "UPDATE mem_meta SET value = '21' WHERE key = 'count'")
    with pytest.raises(IntegrityError, match="commit record fails authentication"):
        RehearsalMemory.open(url, keys=keys)
    _sql(url, "UPDATE mem_meta SET value = '20' WHERE key = 'count'")
    with pytest.raises(IntegrityError, match="holds 21 entries but its commit record says 20"):
        RehearsalMemory.open(url, keys=keys)


def test_a_deleted_row_is_an_integrity_error(url: str, keys: KeyRing) -> None:
    _sql(url, "DELETE FROM entries WHERE id = 4")
    with pytest.raises(IntegrityError, match="holds 19 entries but its commit record says 20"):
        RehearsalMemory.open(url, keys=keys, read_only=True)


# -- the commit record and the manifest ------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [("generation", "1"), ("generation", "9"), ("count", "19"), ("next_id", "5"), ("commit", "00" * 16)],
)
def test_an_edited_commit_record_is_refused_at_open(url: str, keys: KeyRing, key: str, value: str) -> None:
    _sql(url, "UPDATE mem_meta SET value = %s WHERE key = %s", (value, key))
    for read_only in (True, False):
        with pytest.raises(IntegrityError, match="commit record"):
            RehearsalMemory.open(url, keys=keys, read_only=read_only)


def test_an_edited_generation_is_refused_by_an_open_memory(
    url: str, live: RehearsalMemory, vectors: np.ndarray
) -> None:
    generation = str(live._records.generation)
    _sql(url, "UPDATE mem_meta SET value = '1' WHERE key = 'generation'")
    with pytest.raises(IntegrityError, match="commit record"):
        live.add(["more"], vectors=vectors[:1], tenant="alice")  # never re-tagged as this writer's
    with pytest.raises(IntegrityError, match="commit record"):
        len(live)
    _sql(url, "UPDATE mem_meta SET value = %s WHERE key = 'generation'", (generation,))
    assert len(live) == N  # put back: all is well again, and nothing of the refused add was kept


@pytest.mark.parametrize(
    "change",
    [
        {"embedding_only": True},  # would hide the texts
        {"store_id": "0" * 32},
        {"encoder": {"name": "other", "dim": MEMORY_DIM}},
    ],
)
def test_an_edited_manifest_is_refused_at_open(url: str, keys: KeyRing, change: dict[str, object]) -> None:
    with psycopg.connect(url) as conn:
        stored = conn.execute("SELECT value FROM rehearsal.mem_meta WHERE key = 'manifest'").fetchone()[0]
    edited = json.dumps({**json.loads(stored), **change}, sort_keys=True)
    _sql(url, "UPDATE mem_meta SET value = %s WHERE key = 'manifest'", (edited,))
    with pytest.raises(IntegrityError, match="commit record"):
        RehearsalMemory.open(url, keys=keys, read_only=True)


def test_an_encrypted_memory_relabelled_unencrypted_is_refused(url: str, keys: KeyRing) -> None:
    # The checksums of a memory without keys need no secret: an admin can recompute the commit record's.
    with psycopg.connect(url) as conn:
        meta = dict(conn.execute("SELECT key, value FROM rehearsal.mem_meta").fetchall())
    manifest = {**json.loads(meta["manifest"]), "encrypted": False, "embedding_only": True}
    text = json.dumps(manifest, sort_keys=True)
    tag = CatalogAuthenticator(None, manifest["store_id"].encode()).commit_tag(
        int(meta["generation"]), int(meta["count"]), int(meta["next_id"]), text, meta["rowset"]
    )
    _sql(url, "UPDATE mem_meta SET value = %s WHERE key = 'manifest'", (text,))
    _sql(url, "UPDATE mem_meta SET value = %s WHERE key = 'commit'", (tag,))
    with pytest.raises(IntegrityError, match="holds a vault but its manifest says it is unencrypted"):
        RehearsalMemory.open(url, keys=None, read_only=True)


# -- a memory without keys: checksums ---------------------------------------------------------------


def test_a_memory_without_keys_checksums_its_rows_and_commit_record(
    postgres_url: str, vectors: np.ndarray
) -> None:
    _make(postgres_url, None, vectors)
    with RehearsalMemory.open(postgres_url, keys=None) as mem:
        assert mem.verify()["metadata_keyed"] == 0
    _sql(postgres_url, "UPDATE entries SET label_int = 2 WHERE id = 3")
    with (
        RehearsalMemory.open(postgres_url, keys=None, read_only=True) as mem,
        pytest.raises(IntegrityError, match="catalog row 3"),
    ):
        mem.entries([3])
    _sql(postgres_url, "UPDATE mem_meta SET value = '7' WHERE key = 'generation'")
    with pytest.raises(IntegrityError, match="commit record"):
        RehearsalMemory.open(postgres_url, keys=None)


def test_a_memory_that_checks_out_opens_verifies_and_writes(
    url: str, keys: KeyRing, vectors: np.ndarray
) -> None:
    with RehearsalMemory.open(url, keys=keys) as mem:
        report = mem.verify()
        assert (report["entries"], report["metadata"], report["metadata_keyed"]) == (N, N, 1)
        mem.delete([0])
        mem.add(["again"], vectors=vectors[:1], metadata=[{"label": "name"}], tenant="carol")
        assert mem.forget(tenant="bob") == N // 2
    with RehearsalMemory.open(url, keys=keys, read_only=True) as mem:
        assert mem.verify()["entries"] == N // 2
        assert mem.group_ids("label")["name"] == [N]


def test_the_vectors_a_follower_reads_carry_authenticated_tenants(url: str, keys: KeyRing) -> None:
    _sql(url, "UPDATE entries SET tenant = 'alice' WHERE id = 13")  # a bob vector filed under alice
    with RehearsalMemory.open(url, keys=keys, read_only=True) as mem:
        with pytest.raises(IntegrityError, match="catalog row 13"):
            mem._records.vectors_of([12, 13])
        with pytest.raises(IntegrityError, match="catalog row 13"):
            list(mem._records.vectors(min_gen_exclusive=1))
        assert [row[:2] for row in mem._records.vectors_of([12])] == [(12, "bob")]
