"""The PostgreSQL server of a test run: started once per session by the run itself, never skipped.

If the server cannot start, every test that needs it fails with the reason (a missing binary, initdb's
own message, the server log's last lines), so a broken setup is never mistaken for a passing suite.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from rehearsal.crypto.keys import KeyRing
from rehearsal.testing.postgres import PostgresServer, ServerStartError, start_postgres

_names = itertools.count()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    try:
        server = start_postgres()
    except ServerStartError as exc:
        pytest.fail(f"the test PostgreSQL server did not start: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of a fresh, empty database (with pgvector) on the session's server."""
    return postgres_server.create_database(f"test_{next(_names)}")


def two_tenant_memory(url: str, keys: KeyRing, n: int = 8, **metadata: object) -> None:
    """A memory at ``url`` holding alice's records (ids 0..n/2-1) and bob's (the rest), labels alternating,
    with ``metadata`` on every record: what the tests of live edits on a server start from."""
    import numpy as np
    from conftest import MEMORY_DIM, unit_vectors

    from rehearsal.memory.facade import RehearsalMemory

    vectors = unit_vectors(np.random.default_rng(0), n)
    with RehearsalMemory.create(url, keys=keys, dim=MEMORY_DIM, encoder_name="synthetic") as memory:
        for tenant, rows in (("alice", range(n // 2)), ("bob", range(n // 2, n))):
            memory.add(
                [f"secret of {tenant} {i}" for i in rows],
                vectors=vectors[list(rows)],
                metadata=[{"label": i % 2, **metadata} for i in rows],
                tenant=tenant,
            )
