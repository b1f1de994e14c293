"""The Milvus server of a test run (milvus-lite on 127.0.0.1): started once per session by the run itself,
never skipped. If it cannot start, every test that needs it fails with the reason and the server's log."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rehearsal.testing.milvus import MilvusServer, MilvusStartError, start_milvus


@pytest.fixture(scope="session")
def milvus_server() -> Iterator[MilvusServer]:
    try:
        server = start_milvus()
    except MilvusStartError as exc:
        pytest.fail(f"the test Milvus server did not start: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def milvus_url(milvus_server: MilvusServer) -> str:
    """``milvus://127.0.0.1:PORT`` of the session's server (each memory makes its own collection there)."""
    return milvus_server.url
