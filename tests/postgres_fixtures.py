"""The PostgreSQL server of a test run: started once per session by the run itself, never skipped.

If the server cannot start, every test that needs it fails with the reason (a missing binary, initdb's
own message, the server log's last lines), so a broken setup is never mistaken for a passing suite.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

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
