"""Faults against a server memory: a client SIGKILLed mid-ingest, the server stopped like a crash while a
memory is in use, and a connection dropped inside a transaction. Each leaves a memory that opens, verifies
and holds every acknowledged add; the client sees our StorageError, never a psycopg exception.

These tests stop and kill things, so they run on a server of their own, not the session's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import numpy as np
import psycopg
import pytest
from conftest import MEMORY_DIM, unit_vectors

from rehearsal.crypto.keys import KeyRing
from rehearsal.errors import StorageError
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.store.postgres.records import ServerRecords
from rehearsal.testing.postgres import PostgresServer, ServerStartError, start_postgres

BATCH = 50

# The child adds batches and prints each batch's ids once add() returned (acknowledged), then goes on.
CHILD = f"""
import os, sys
import numpy as np
from rehearsal.crypto.keys import KeyRing
from rehearsal.memory.facade import RehearsalMemory
mem = RehearsalMemory.open(sys.argv[1], keys=KeyRing.from_env("TEST_KEY"))
rng = np.random.default_rng(0)
while True:
    x = rng.standard_normal(({BATCH}, {MEMORY_DIM})).astype(np.float32)
    ids = mem.add([f"text {{i}}" for i in range({BATCH})], vectors=x, tenant="acme")
    print(" ".join(map(str, ids)), flush=True)
"""


@pytest.fixture(scope="module")
def own_server() -> Iterator[PostgresServer]:
    try:
        server = start_postgres(fsync=True)  # fsync on: the crash test is about durability
    except ServerStartError as exc:
        pytest.fail(f"the test PostgreSQL server did not start: {exc}", pytrace=False)
    yield server
    server.remove()


@pytest.fixture
def url(own_server: PostgresServer, request: pytest.FixtureRequest) -> str:
    return own_server.create_database(request.node.name.lower()[:60])


def _check(url: str, keys: KeyRing, acknowledged: list[int]) -> int:
    mem = RehearsalMemory.open(url, keys=keys)
    try:
        counts = mem.verify()
        present = set(mem.ids())
        assert set(acknowledged) <= present
        assert counts["entries"] % BATCH == 0  # an add is all or nothing
        texts = mem.get_texts(acknowledged)
        assert texts == [f"text {i % BATCH}" for i in range(len(acknowledged))]
        return counts["entries"]
    finally:
        mem.close()


def test_a_client_killed_during_ingest_loses_no_acknowledged_add(url: str, keys: KeyRing) -> None:
    RehearsalMemory.create(url, keys=keys, dim=MEMORY_DIM, encoder_name="synthetic").close()
    env = {**os.environ, "TEST_KEY": keys.export_base64()}
    acknowledged: list[int] = []
    for round_no in range(3):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        try:
            assert child.stdout is not None
            for _ in range(2 + round_no):  # a few acknowledged batches, then a kill at some later point
                line = child.stdout.readline()
                assert line, child.stderr.read() if child.stderr else "child died"
                acknowledged += [int(i) for i in line.split()]
            time.sleep(0.05 * round_no)
            child.send_signal(signal.SIGKILL)
            rest, _ = child.communicate()
            acknowledged += [int(i) for line in rest.splitlines() if line.strip() for i in line.split()]
        finally:
            child.kill()
        assert _check(url, keys, acknowledged) >= len(acknowledged)


def test_a_server_crash_mid_use_is_our_error_and_loses_nothing(
    own_server: PostgresServer, url: str, keys: KeyRing
) -> None:
    mem = RehearsalMemory.create(url, keys=keys, dim=MEMORY_DIM, encoder_name="synthetic")
    rng = np.random.default_rng(0)
    acknowledged = mem.add([f"text {i}" for i in range(BATCH)], vectors=unit_vectors(rng, BATCH))
    own_server.stop("immediate")  # no shutdown checkpoint: like a power cut at the server
    try:
        with pytest.raises(StorageError, match="server"):
            mem.add([f"text {i}" for i in range(BATCH)], vectors=unit_vectors(rng, BATCH))
        with pytest.raises(StorageError):
            mem.search_vectors(unit_vectors(rng, 1), k=3)
    finally:
        own_server.start()
    mem.close()
    assert _check(url, keys, acknowledged) == BATCH


def test_a_connection_dropped_inside_a_transaction_commits_nothing(
    url: str, keys: KeyRing, monkeypatch: pytest.MonkeyPatch
) -> None:
    mem = RehearsalMemory.create(url, keys=keys, dim=MEMORY_DIM, encoder_name="synthetic")
    rng = np.random.default_rng(0)
    acknowledged = mem.add([f"text {i}" for i in range(BATCH)], vectors=unit_vectors(rng, BATCH))
    pid = mem._records.conn.raw.info.backend_pid
    insert = ServerRecords.insert

    def insert_then_lose_the_connection(self: ServerRecords, *args: object, **kwargs: object) -> None:
        insert(self, *args, **kwargs)  # type: ignore[arg-type]
        with psycopg.connect(url, autocommit=True) as admin:  # the texts and rows are written, not committed
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))

    monkeypatch.setattr(ServerRecords, "insert", insert_then_lose_the_connection)
    with pytest.raises(StorageError, match="connection"):
        mem.add([f"text {i}" for i in range(BATCH)], vectors=unit_vectors(rng, BATCH))
    monkeypatch.undo()
    mem.close()
    assert _check(url, keys, acknowledged) == BATCH
    with psycopg.connect(url) as conn:  # neither texts nor data-key counts of the lost batch remain
        assert conn.execute("SELECT count(*) FROM rehearsal.vault_records").fetchone() == (BATCH,)


def test_an_unreachable_server_is_a_clear_error() -> None:
    where = r"cannot connect to postgresql://postgres@127\.0\.0\.1:1/x"
    with pytest.raises(StorageError, match=where) as caught:
        RehearsalMemory.open("postgresql://postgres:secret@127.0.0.1:1/x", keys=KeyRing.generate())
    assert "secret" not in str(caught.value)
