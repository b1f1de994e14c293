"""Format 2 authenticates what a memory reads back (issue 13 items 2, 3, 6 and 10): catalog rows, the
committed generation and count, the manifest, and erasure that does not wait for a later writer."""

from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from rehearsal import IntegrityError, KeyRing, RehearsalMemory, StoreFormatError
from rehearsal.store.sqlite.head import GenerationHead

DIM = 16
N = 20


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _make(path: Path, keys: KeyRing | None, vectors: np.ndarray) -> None:
    """alice owns ids 0..9, bob 10..19; labels i % 3, tasks t0/t1, tags, an extra field, a source."""
    half = len(vectors) // 2
    with RehearsalMemory.create(
        path, keys=keys, dim=DIM, encoder_name="synthetic-16", embedding_only=keys is None
    ) as mem:
        for tenant, rows in (("alice", range(half)), ("bob", range(half, len(vectors)))):
            mem.add(
                None if keys is None else [f"secret of {tenant} {i}" for i in rows],
                vectors=vectors[list(rows)],
                metadata=[
                    {"label": i % 3, "task": f"t{i % 2}", "tags": ["x"], "note": f"n{i}"} for i in rows
                ],
                sources=[f"doc-{i}" for i in rows] if keys is None else None,
                tenant=tenant,
            )


def _sql(path: Path, statement: str) -> None:
    conn = sqlite3.connect(path / "memory.sqlite", isolation_level=None)
    conn.execute(statement)
    conn.close()


@pytest.fixture
def vectors(rng: np.random.Generator) -> np.ndarray:
    return _unit(rng, N)


@pytest.fixture
def store(tmp_path: Path, keys: KeyRing, vectors: np.ndarray) -> Path:
    _make(tmp_path / "mem", keys, vectors)
    return tmp_path / "mem"


# -- item 2: every row's metadata ------------------------------------------------------------------


def test_a_row_moved_to_another_tenant_is_refused_by_the_filtered_search(
    store: Path, keys: KeyRing, vectors: np.ndarray
) -> None:
    _sql(store, "UPDATE entries SET tenant = 'bob', label = 2 WHERE id = 1")  # id 1 is alice's
    with RehearsalMemory.open(store, keys=keys) as mem:
        with pytest.raises(IntegrityError, match="catalog row 1 fails authentication"):
            mem.search_vectors(vectors[1:2], 3, where={"tenant": "bob"})
        with pytest.raises(IntegrityError, match="catalog row 1"):
            mem.get_texts([1])
        with pytest.raises(IntegrityError, match="catalog row 1"):
            mem.verify()


@pytest.mark.parametrize(
    "edit",
    [
        "task = 't9'",
        "label = 5",
        "label = '1'",  # the same digit as a string: a label's type is part of it
        "tags = '[\"y\"]'",
        'extra = \'{"note": "forged"}\'',
        "source = 'elsewhere'",
        "added_gen = 1",
    ],
)
def test_an_edited_column_is_an_integrity_error_on_every_read(
    store: Path, keys: KeyRing, vectors: np.ndarray, edit: str
) -> None:
    _sql(store, f"UPDATE entries SET {edit} WHERE id = 13")
    with pytest.raises(IntegrityError), RehearsalMemory.open(store, keys=keys) as mem:
        mem.verify()
    if edit == "added_gen = 1":
        return  # refused at open already: the replay would have skipped the row
    with RehearsalMemory.open(store, keys=keys, read_only=True) as mem:
        with pytest.raises(IntegrityError, match="catalog row 13"):
            mem.search_vectors(vectors[13:14], 2)
        with pytest.raises(IntegrityError, match="catalog row 13"):
            mem.entries([13])
        with pytest.raises(IntegrityError, match="catalog row 13"):
            mem.group_ids("label")


def test_a_row_edited_out_of_a_filter_is_not_silently_left_out(
    store: Path, keys: KeyRing, vectors: np.ndarray
) -> None:
    _sql(store, "UPDATE entries SET task = 't0' WHERE id = 13")  # 13 is a t1 row: the filter below skips it
    with (
        RehearsalMemory.open(store, keys=keys, read_only=True) as mem,
        pytest.raises(IntegrityError, match="catalog row 13"),
    ):
        mem.search_vectors(vectors[13:14], 3, where={"task": "t1"})


def test_a_forget_does_not_miss_a_row_whose_tenant_was_edited_away(store: Path, keys: KeyRing) -> None:
    _sql(store, "UPDATE entries SET tenant = 'bob' WHERE id = 2")
    with RehearsalMemory.open(store, keys=keys) as mem, pytest.raises(IntegrityError, match="catalog row 2"):
        mem.forget(tenant="alice")


def test_a_row_copied_from_another_store_under_the_same_key_is_refused(
    tmp_path: Path, keys: KeyRing, vectors: np.ndarray
) -> None:
    _make(tmp_path / "a", keys, vectors)
    _make(tmp_path / "b", keys, vectors)
    conn = sqlite3.connect(tmp_path / "a" / "memory.sqlite", isolation_level=None)
    conn.execute("ATTACH DATABASE ? AS other", (str(tmp_path / "b" / "memory.sqlite"),))
    conn.execute(
        "UPDATE entries SET mac = (SELECT mac FROM other.entries WHERE other.entries.id = 4) WHERE id = 4"
    )
    conn.close()
    with RehearsalMemory.open(tmp_path / "a", keys=keys) as mem, pytest.raises(IntegrityError, match="row 4"):
        mem.entries([4])


def test_a_store_without_keys_says_its_metadata_is_only_checksummed(
    tmp_path: Path, vectors: np.ndarray
) -> None:
    _make(tmp_path / "plain", None, vectors)
    with RehearsalMemory.open(tmp_path / "plain") as mem:
        counts = mem.verify()
    assert counts["metadata"] == N
    assert counts["metadata_keyed"] == 0


def test_a_keyed_store_says_its_metadata_is_authenticated(store: Path, keys: KeyRing) -> None:
    with RehearsalMemory.open(store, keys=keys, read_only=True) as mem:
        assert mem.verify()["metadata_keyed"] == 1


# -- items 3 and 6: the committed generation, the count and the manifest ---------------------------


def _crashed_copy(store: Path, keys: KeyRing, rng: np.random.Generator, target: Path) -> int:
    """A copy of ``store`` taken while its writer had committed three more batches into the WAL (a writer
    killed before any checkpoint); returns the WAL's size."""
    mem = RehearsalMemory.open(store, keys=keys)
    for b in range(3):
        mem.add([f"late {b} {i}" for i in range(4)], vectors=_unit(rng, 4), tenant="alice")
    target.mkdir()
    for path in store.iterdir():
        if path.is_file():
            shutil.copyfile(path, target / path.name)
    mem.close()
    wal = target / "memory.sqlite-wal"
    assert wal.stat().st_size > 0
    return wal.stat().st_size


def test_a_truncated_wal_is_refused_instead_of_dropping_commits(
    store: Path, keys: KeyRing, rng: np.random.Generator, tmp_path: Path
) -> None:
    size = _crashed_copy(store, keys, rng, tmp_path / "crashed")
    with RehearsalMemory.open(tmp_path / "crashed", keys=keys, read_only=True) as mem:
        assert len(mem) == N + 12  # the WAL intact: everything acknowledged is there
    os.truncate(tmp_path / "crashed" / "memory.sqlite-wal", size - 3000)
    with pytest.raises(IntegrityError, match="committed transactions are missing"):
        RehearsalMemory.open(tmp_path / "crashed", keys=keys)


def test_a_flipped_byte_in_a_late_wal_frame_is_refused(
    store: Path, keys: KeyRing, rng: np.random.Generator, tmp_path: Path
) -> None:
    size = _crashed_copy(store, keys, rng, tmp_path / "crashed")
    with open(tmp_path / "crashed" / "memory.sqlite-wal", "r+b") as fh:
        fh.seek(size - 2000)
        byte = fh.read(1)
        fh.seek(size - 2000)
        fh.write(bytes([byte[0] ^ 0x01]))
    with pytest.raises(IntegrityError, match="committed transactions are missing"):
        RehearsalMemory.open(tmp_path / "crashed", keys=keys, read_only=True)


def test_an_edited_generation_is_refused(store: Path, keys: KeyRing) -> None:
    _sql(store, "UPDATE mem_meta SET value = '1' WHERE key = 'generation'")
    with pytest.raises(IntegrityError, match="commit record fails authentication"):
        RehearsalMemory.open(store, keys=keys)


def test_a_deleted_row_is_refused(store: Path, keys: KeyRing) -> None:
    _sql(store, "DELETE FROM entries WHERE id = 7")
    with pytest.raises(IntegrityError, match="holds 19 entries but its commit record says 20"):
        RehearsalMemory.open(store, keys=keys, read_only=True)


@pytest.mark.parametrize(
    ("field", "value"), [("store_id", "0" * 32), ("embedding_only", True), ("encrypted", False)]
)
def test_an_edited_manifest_is_refused(store: Path, keys: KeyRing, field: str, value: object) -> None:
    manifest = json.loads((store / "memory.json").read_text())
    manifest[field] = value
    (store / "memory.json").write_text(json.dumps(manifest))
    with pytest.raises(IntegrityError):
        RehearsalMemory.open(store, keys=keys)


def test_another_stores_database_and_snapshot_under_the_same_key_are_refused(
    tmp_path: Path, keys: KeyRing, vectors: np.ndarray, rng: np.random.Generator
) -> None:
    _make(tmp_path / "a", keys, vectors)
    _make(tmp_path / "b", keys, _unit(rng, N))
    for name in ("memory.sqlite", "index.snap"):
        shutil.copyfile(tmp_path / "b" / name, tmp_path / "a" / name)
    with pytest.raises(IntegrityError, match=r"memory\.json disagrees|memory\.gen"):
        RehearsalMemory.open(tmp_path / "a", keys=keys)


def test_a_database_put_back_from_an_older_copy_is_refused(
    store: Path, keys: KeyRing, rng: np.random.Generator, tmp_path: Path
) -> None:
    shutil.copyfile(store / "memory.sqlite", tmp_path / "old.sqlite")
    with RehearsalMemory.open(store, keys=keys) as mem:
        mem.add(["later"], vectors=_unit(rng, 1), tenant="alice")
    shutil.copyfile(tmp_path / "old.sqlite", store / "memory.sqlite")
    with pytest.raises(IntegrityError, match="committed transactions are missing"):
        RehearsalMemory.open(store, keys=keys, read_only=True)


# -- item 10: a forget killed between its commit and its snapshot rewrite --------------------------


def _snapshot_generation(path: Path) -> int:
    return int(struct.unpack_from("<Q", (path / "index.snap").read_bytes(), 8)[0])


@pytest.mark.parametrize("read_only", [True, False])
def test_a_forget_killed_before_its_snapshot_is_finished_by_the_next_open(
    store: Path, keys: KeyRing, vectors: np.ndarray, read_only: bool
) -> None:
    script = textwrap.dedent(
        """
        import os, sys
        from rehearsal import KeyRing, RehearsalMemory
        from rehearsal.store.faiss import follower

        def die(self):
            os._exit(9)  # killed after the forget committed, before index.snap is replaced

        mem = RehearsalMemory.open(sys.argv[1], keys=KeyRing.from_base64(sys.argv[2]))
        follower.FaissVectorIndex.write_snapshot = die
        mem.forget(tenant="alice")
        """
    )
    before = _snapshot_generation(store)
    done = subprocess.run(
        [sys.executable, "-c", script, str(store), keys.export_base64()], capture_output=True, check=False
    )
    assert done.returncode == 9, done.stderr.decode()
    assert _snapshot_generation(store) == before  # the old snapshot, alice's vectors inside, is still there
    with RehearsalMemory.open(store, keys=keys, read_only=read_only) as mem:
        assert _snapshot_generation(store) > before  # rewritten by this open, whichever kind
        hits = mem.search_vectors(vectors[:10], 5)
        assert all(h.id >= 10 for row in hits for h in row)
        assert len(mem) == N // 2


def test_a_head_that_cannot_be_written_does_not_fail_a_durable_add(
    store: Path, keys: KeyRing, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(self: GenerationHead, generation: int, count: int, nonce: str | None) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with RehearsalMemory.open(store, keys=keys) as mem:
        monkeypatch.setattr(GenerationHead, "write", full)
        vector = _unit(rng, 1)
        (new,) = mem.add(["late"], vectors=vector, tenant="alice")
        assert mem.search_vectors(vector, 1)[0][0].id == new  # the index followed the commit
        monkeypatch.undo()
    with RehearsalMemory.open(store, keys=keys, read_only=True) as mem:
        assert mem.get_texts([new]) == ["late"]  # the head behind the database is no loss


@pytest.mark.parametrize("field", ["encrypted", "embedding_only", "store_id", "encoder"])
def test_a_manifest_missing_a_field_is_a_format_error(store: Path, keys: KeyRing, field: str) -> None:
    manifest = json.loads((store / "memory.json").read_text())
    manifest["x" + field] = manifest.pop(field)  # what a flipped byte in the name does
    (store / "memory.json").write_text(json.dumps(manifest))
    with pytest.raises(StoreFormatError, match=f"field '{field}'"):
        RehearsalMemory.open(store, keys=keys)
