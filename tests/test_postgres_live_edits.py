"""Handles that are open while an administrator edits the server's rows (issue 28).

The case the independent pass found: a writer queries ``ids(where={"tenant": "bob"})``, an administrator
runs ``UPDATE entries SET tenant = 'bob'`` on one of alice's rows, and ``forget(tenant="bob")`` deleted
alice's record too. Every handle now notices other connections' writes (the ``touched`` marks a trigger
keeps) and re-checks those rows before its next query by metadata; and a delete checks the tag of every
row it removes inside its own transaction, so erasure never acts on a row whose tag fails.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from postgres_fixtures import two_tenant_memory

from rehearsal.crypto.keys import KeyRing
from rehearsal.errors import IntegrityError
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.store.postgres.records import ServerRecords

N = 8  # alice owns ids 0..3, bob 4..7


def _sql(url: str, statement: str) -> None:
    """One statement as a server administrator runs it: autocommit, the default search_path."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement)


def _make(url: str, keys: KeyRing) -> None:
    two_tenant_memory(url, keys)


def _all_rows_remain(url: str, keys: KeyRing) -> None:
    _sql(url, "UPDATE rehearsal.entries SET tenant = 'alice' WHERE id = 0")  # the edit undone
    with RehearsalMemory.open(url, keys=keys, read_only=True) as memory:
        memory.verify()
        assert memory.ids() == list(range(N))
        assert memory.ids(where={"tenant": "alice"}) == [0, 1, 2, 3]


def test_forget_on_an_open_writer_refuses_a_row_moved_into_the_tenant(
    postgres_url: str, keys: KeyRing
) -> None:
    _make(postgres_url, keys)
    with RehearsalMemory.open(postgres_url, keys=keys) as writer:
        assert writer.ids(where={"tenant": "bob"}) == [4, 5, 6, 7]
        _sql(postgres_url, "UPDATE rehearsal.entries SET tenant = 'bob' WHERE id = 0")
        with pytest.raises(IntegrityError, match="catalog row 0 fails authentication"):
            writer.forget(tenant="bob")
        with pytest.raises(IntegrityError, match="catalog row 0"):
            writer.ids(where={"tenant": "bob"})
    _all_rows_remain(postgres_url, keys)


def test_an_open_readers_filtered_ids_do_not_return_a_moved_row(postgres_url: str, keys: KeyRing) -> None:
    _make(postgres_url, keys)
    with RehearsalMemory.open(postgres_url, keys=keys, read_only=True) as reader:
        assert reader.ids(where={"tenant": "bob"}) == [4, 5, 6, 7]
        _sql(postgres_url, "UPDATE rehearsal.entries SET tenant = 'bob' WHERE id = 0")
        with pytest.raises(IntegrityError, match="catalog row 0"):
            reader.ids(where={"tenant": "bob"})
        _sql(postgres_url, "UPDATE rehearsal.entries SET tenant = 'alice' WHERE id = 0")
        assert reader.ids(where={"tenant": "bob"}) == [4, 5, 6, 7]  # undone: its tag verifies again
        # A row an administrator INSERTs under an old generation is seen too.
        _sql(
            postgres_url,
            "INSERT INTO rehearsal.entries SELECT id + 100, 'bob', task, label_int, label_text, tags, extra,"
            " source, embedding, 0, created_at, mac FROM rehearsal.entries WHERE id = 1",
        )
        with pytest.raises(IntegrityError, match="catalog row 101"):
            reader.ids(where={"tenant": "bob"})


@pytest.mark.parametrize("verb", ["forget", "delete"])
def test_a_delete_checks_the_rows_it_removes_inside_its_transaction(
    postgres_url: str, keys: KeyRing, monkeypatch: pytest.MonkeyPatch, verb: str
) -> None:
    _make(postgres_url, keys)
    with RehearsalMemory.open(postgres_url, keys=keys) as writer:
        assert writer.ids(where={"tenant": "bob"}) == [4, 5, 6, 7]
        _sql(postgres_url, "UPDATE rehearsal.entries SET tenant = 'bob' WHERE id = 0")
        # The edit lands between the writer's last check and its DELETE (a race no check before it closes).
        monkeypatch.setattr(ServerRecords, "check_rows_since", lambda self: 0)
        act: Any = (
            (lambda: writer.forget(tenant="bob")) if verb == "forget" else (lambda: writer.delete([0, 4]))
        )
        with pytest.raises(IntegrityError, match="catalog row 0 fails authentication"):
            act()
        monkeypatch.undo()
    _all_rows_remain(postgres_url, keys)
