"""A ``create`` on a server URL that fails after its tables committed leaves no half-made schema behind:
the same ``create`` can simply be run again (a leftover schema would be refused as "already exists")."""

from __future__ import annotations

import socket

import psycopg
import pytest
from conftest import MEMORY_DIM

from rehearsal.crypto.keys import KeyRing
from rehearsal.errors import StorageError
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.store.postgres import backends


def _create(url: str, keys: KeyRing, **kw: object) -> RehearsalMemory:
    return RehearsalMemory.create(url, keys=keys, dim=MEMORY_DIM, encoder_name="synthetic", **kw)  # type: ignore[arg-type]


def _schemas(url: str) -> set[str]:
    with psycopg.connect(url.split("?")[0]) as conn:
        rows = conn.execute("SELECT schema_name FROM information_schema.schemata").fetchall()
    return {row[0] for row in rows}


def _fail_opening(*args: object, **kwargs: object) -> object:
    raise StorageError("opening the new memory failed: the server connection failed (injected)")


def test_a_create_that_fails_after_its_tables_committed_drops_its_schema(
    postgres_url: str, keys: KeyRing, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = postgres_url + "?schema=halfmade"
    # The fault: the connection is lost between the creating transaction's commit and the opening.
    monkeypatch.setattr(backends, "open_server_stores", _fail_opening)
    with pytest.raises(StorageError, match="injected"):
        _create(url, keys)
    assert "halfmade" not in _schemas(postgres_url)
    monkeypatch.undo()
    with _create(url, keys) as memory:  # the retry is not refused as "already exists"
        assert len(memory) == 0


def test_when_the_cleanup_fails_too_the_error_names_the_schema_to_drop(
    postgres_url: str, keys: KeyRing, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = postgres_url + "?schema=leftover"
    password = psycopg.conninfo.conninfo_to_dict(postgres_url)["password"]

    def fail_and_lose_the_server(*args: object, **kwargs: object) -> object:
        def refused(*a: object, **k: object) -> object:
            raise StorageError("cannot connect to the server (injected)")

        monkeypatch.setattr(backends, "connect", refused)  # the server is gone for the cleanup as well
        return _fail_opening()

    monkeypatch.setattr(backends, "open_server_stores", fail_and_lose_the_server)
    with pytest.raises(StorageError, match="could not be removed") as caught:
        _create(url, keys)
    message = str(caught.value)
    assert "'leftover'" in message
    assert "DROP SCHEMA" in message
    assert isinstance(password, str)
    assert password not in message
    assert "leftover" in _schemas(postgres_url)  # really left: the message is the only way to know


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_unreachable_milvus_at_create_leaves_no_schema(postgres_url: str, keys: KeyRing) -> None:
    # A real fault: no Milvus listens on the port, so the vector index cannot be made after the
    # PostgreSQL tables committed.
    url = postgres_url + "?schema=nomilvus"
    with pytest.raises(StorageError, match="Milvus"):
        _create(url, keys, vectors=f"milvus://127.0.0.1:{_closed_port()}")
    assert "nomilvus" not in _schemas(postgres_url)
    with _create(url, keys) as memory:
        assert len(memory) == 0
