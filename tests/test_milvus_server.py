"""The throwaway Milvus server that tests and benchmarks start: it answers pymilvus once started, keeps its
data across a restart over the same folder, and a start that fails says why instead of hanging or skipping."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import MEMORY_DIM, unit_vectors

import rehearsal as rh
from rehearsal.crypto.keys import KeyRing
from rehearsal.store.milvus.index import MilvusIndex
from rehearsal.testing.milvus import MilvusServer, MilvusStartError, start_milvus


def test_the_session_server_answers_pymilvus(milvus_server: MilvusServer) -> None:
    from pymilvus import MilvusClient

    client = MilvusClient(uri=milvus_server.uri)
    try:
        assert isinstance(client.list_collections(), list)
    finally:
        client.close()
    assert milvus_server.url == f"milvus://127.0.0.1:{milvus_server.port}"


def test_a_server_that_exits_at_once_fails_with_its_status(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(sys, "executable", "/bin/false")
    with pytest.raises(MilvusStartError, match="exited with status 1"):
        start_milvus(tmp_path / "data", timeout=20)


def test_a_data_folder_that_cannot_be_made_is_named(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(MilvusStartError, match="cannot make the Milvus data folder"):
        start_milvus(tmp_path / "file" / "data")


def test_a_restarted_server_keeps_the_collection_and_a_new_address_can_be_given(
    tmp_path: Path, keys: KeyRing
) -> None:
    vectors = unit_vectors(np.random.default_rng(0), 8)
    with start_milvus(tmp_path / "milvus") as first:
        memory = rh.RehearsalMemory.create(
            tmp_path / "m", keys=keys, dim=MEMORY_DIM, encoder_name="synthetic", vectors=first.url
        )
        memory.add([f"t{i}" for i in range(8)], vectors=vectors)
        memory.close()
    with start_milvus(tmp_path / "milvus") as second:
        again = rh.RehearsalMemory.open(tmp_path / "m", keys=keys, vectors=second.url)
        try:
            index = again._vectors
            assert isinstance(index, MilvusIndex)
            # Opening replayed nothing (the published generation was current): the rows survived the restart.
            assert index.ids().tolist() == list(range(8))
            assert [row[0].id for row in again.search_vectors(vectors[:3], 1)] == [0, 1, 2]
        finally:
            again.close()
