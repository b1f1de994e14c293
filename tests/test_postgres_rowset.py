"""A server memory's sealed row set and vector-covering row tags (format 3, issue 28).

A row an administrator deletes leaves no tag behind to fail: open handles notice it through the row-set
sum the commit record seals, once the change counter moves (a DELETE moves it too). A row's tag covers its
vector, so a vector swapped in from another row is refused rather than steering a search. A memory made
in format 2 still opens, and a writer's open moves it to format 3.
"""

from __future__ import annotations

import numpy as np
import psycopg
import pytest
from conftest import MEMORY_DIM, unit_vectors
from postgres_fixtures import two_tenant_memory

from rehearsal.crypto.keys import KeyRing
from rehearsal.errors import IntegrityError
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.store.postgres import records as records_module
from rehearsal.store.postgres.backends import open_server_stores, read_server_manifest
from rehearsal.store.postgres.tags import COLUMNS, tagged

N = 8  # alice owns ids 0..3, bob 4..7
ROW_SET = "row set its commit record seals|entries but its commit record says"


def _sql(url: str, statement: str) -> None:
    """One statement as a server administrator runs it: autocommit, the default search_path."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement)


def _meta(url: str) -> dict[str, str]:
    with psycopg.connect(url, autocommit=True) as conn:
        return dict(conn.execute("SELECT key, value FROM rehearsal.mem_meta").fetchall())


def test_a_row_deleted_on_the_server_is_an_integrity_error_on_open_handles(
    postgres_url: str, keys: KeyRing
) -> None:
    two_tenant_memory(postgres_url, keys)
    with (
        RehearsalMemory.open(postgres_url, keys=keys, read_only=True) as reader,
        RehearsalMemory.open(postgres_url, keys=keys) as writer,
    ):
        assert reader.ids() == writer.ids() == list(range(N))
        _sql(postgres_url, "DELETE FROM rehearsal.entries WHERE id = 2")
        for handle in (reader, writer):
            with pytest.raises(IntegrityError, match=ROW_SET):
                handle.ids()
            with pytest.raises(IntegrityError, match=ROW_SET):
                handle.entries([0, 1])
            with pytest.raises(IntegrityError, match=ROW_SET):
                handle.ids(where={"label": 1})
        with pytest.raises(IntegrityError, match=ROW_SET):
            writer.forget(tenant="bob")
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        left = conn.execute("SELECT id FROM rehearsal.entries ORDER BY id").fetchall()
    assert [r[0] for r in left] == [0, 1, 3, 4, 5, 6, 7]  # the refused forget removed nothing
    with pytest.raises(IntegrityError, match="holds 7 entries but its commit record says 8"):
        RehearsalMemory.open(postgres_url, keys=keys, read_only=True)


def test_a_truncated_table_is_noticed_by_an_open_reader(postgres_url: str, keys: KeyRing) -> None:
    two_tenant_memory(postgres_url, keys)
    with RehearsalMemory.open(postgres_url, keys=keys, read_only=True) as reader:
        assert reader.ids() == list(range(N))
        _sql(postgres_url, "TRUNCATE rehearsal.entries")
        with pytest.raises(IntegrityError, match="holds 0 entries but its commit record says 8"):
            reader.ids()


def test_another_connections_writes_do_not_trip_the_row_set_check(postgres_url: str, keys: KeyRing) -> None:
    two_tenant_memory(postgres_url, keys)
    vectors = unit_vectors(np.random.default_rng(5), 3)
    with (
        RehearsalMemory.open(postgres_url, keys=keys, read_only=True) as reader,
        RehearsalMemory.open(postgres_url, keys=keys) as writer,
    ):
        assert reader.ids() == list(range(N))
        added = writer.add(["one", "two", "three"], vectors=vectors, tenant="carol")
        assert reader.ids() == [*range(N), *added]
        writer.delete([1, added[0]])
        assert reader.ids() == [0, *range(2, N), *added[1:]]
        writer.forget(tenant="bob")
        assert reader.ids() == [0, 2, 3, *added[1:]]
        assert set(reader.entries([0, added[2]])) == {0, added[2]}
        reader.verify()


def test_a_writers_own_commits_need_no_recount(
    postgres_url: str, keys: KeyRing, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The per-query cost stays small: a recount of every row only follows somebody else's change."""
    two_tenant_memory(postgres_url, keys)
    recounts: list[int] = []
    check = records_module.check_rowset

    def counted(records: object, count: int, rowset: str, tally: object = None) -> None:
        if tally is None:
            recounts.append(count)
        check(records, count, rowset, tally)  # type: ignore[arg-type]

    monkeypatch.setattr(records_module, "check_rowset", counted)
    vectors = unit_vectors(np.random.default_rng(6), 4)
    with RehearsalMemory.open(postgres_url, keys=keys) as writer:
        assert writer.ids() == list(range(N))  # the first look reads every row once
        for i in range(4):
            writer.add([f"text {i}"], vectors=vectors[i : i + 1], tenant="alice")
            assert len(writer.ids(where={"tenant": "alice"})) == N // 2 + i + 1
        assert recounts == []
        _sql(postgres_url, "DELETE FROM rehearsal.entries WHERE id = 6")
        with pytest.raises(IntegrityError, match=ROW_SET):
            writer.ids()
        assert recounts == [N + 4]


def test_a_vector_swapped_in_from_another_row_is_refused(postgres_url: str, keys: KeyRing) -> None:
    two_tenant_memory(postgres_url, keys)
    query = unit_vectors(np.random.default_rng(1), 1)
    with RehearsalMemory.open(postgres_url, keys=keys, read_only=True) as reader:
        reader.search_vectors(query, k=4, where={"tenant": "alice"})
        _sql(
            postgres_url,
            "UPDATE rehearsal.entries SET embedding = (SELECT embedding FROM rehearsal.entries WHERE id = 5)"
            " WHERE id = 2",
        )
        with pytest.raises(
            IntegrityError, match="catalog row 2 fails authentication: its metadata or vector"
        ):
            reader.search_vectors(query, k=4, where={"tenant": "alice"})
    bobs = unit_vectors(np.random.default_rng(0), N)[5:6]  # row 5's vector, now row 2's too
    with (
        RehearsalMemory.open(postgres_url, keys=keys, read_only=True) as fresh,
        pytest.raises(IntegrityError, match="catalog row 2"),
    ):
        fresh.search_vectors(bobs, k=2)


def test_a_commit_record_without_its_row_set_is_refused(postgres_url: str, keys: KeyRing) -> None:
    two_tenant_memory(postgres_url, keys)
    _sql(postgres_url, "DELETE FROM rehearsal.mem_meta WHERE key = 'rowset'")
    with pytest.raises(IntegrityError, match="commit record fails authentication"):
        RehearsalMemory.open(postgres_url, keys=keys, read_only=True)


def _as_format2(url: str, keys: KeyRing) -> None:
    """Rewrite a memory as the previous release left it: rows tagged over their metadata only, no sealed
    row set, format 2, no trigger marking deletions."""
    manifest = read_server_manifest(url)
    records, _, _ = open_server_stores(url, keys=keys, dim=MEMORY_DIM, read_only=False, manifest=manifest)
    try:
        conn = records.conn
        with conn.raw.transaction():
            for values in conn.execute(f"SELECT {COLUMNS} FROM entries").fetchall():
                old = tagged(values, with_vector=False)
                conn.execute(
                    "UPDATE entries SET mac = %s WHERE id = %s", (records.auth.row_tag(old[:8]), old[0])
                )
            conn.execute("DELETE FROM mem_meta WHERE key = 'rowset'")
            conn.execute("UPDATE mem_meta SET value = '2' WHERE key = 'format'")
            conn.execute("DROP TRIGGER entries_touch_removal ON entries")
            records.seal_commit()
    finally:
        records.close()


def test_a_format2_memory_still_opens_and_a_writer_moves_it_to_format3(
    postgres_url: str, keys: KeyRing
) -> None:
    two_tenant_memory(postgres_url, keys)
    with RehearsalMemory.open(postgres_url, keys=keys, read_only=True) as memory:
        ids, texts = memory.ids(where={"tenant": "alice"}), memory.get_texts(list(range(N)))
        entries = {i: r.metadata() for i, r in memory.entries(list(range(N))).items()}
    _as_format2(postgres_url, keys)
    assert _meta(postgres_url)["format"] == "2"
    assert "rowset" not in _meta(postgres_url)
    with RehearsalMemory.open(postgres_url, keys=keys, read_only=True) as old:
        assert old.ids(where={"tenant": "alice"}) == ids
        assert old.get_texts(list(range(N))) == texts
        assert {i: r.metadata() for i, r in old.entries(list(range(N))).items()} == entries
        old.verify()
    with RehearsalMemory.open(postgres_url, keys=keys) as writer:  # moves it to format 3
        assert writer.ids(where={"tenant": "alice"}) == ids
        writer.verify()
        assert _meta(postgres_url)["format"] == "3"
        assert "rowset" in _meta(postgres_url)
        _sql(postgres_url, "DELETE FROM rehearsal.entries WHERE id = 3")
        with pytest.raises(IntegrityError, match=ROW_SET):
            writer.ids()
