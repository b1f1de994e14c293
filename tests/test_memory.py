"""RehearsalMemory: durability, isolation, erasure, bad input and search quality, on stores under tmp_path."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rehearsal.crypto.keys import KeyRing
from rehearsal.errors import (
    DimensionMismatchError,
    EncoderMismatchError,
    MissingKeyError,
    NotFoundError,
    ReadOnlyError,
    StoreFormatError,
    StoreLockedError,
    ValidationError,
    WrongKeyError,
)
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.memory.policies import Priority, Reservoir

DIM = 32
ENCODER = "synthetic-32"
REPO = Path(__file__).resolve().parents[1]


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def texts_for(start: int, n: int) -> list[str]:
    return [f"record number {i}" for i in range(start, start + n)]


def make(path: Path, keys: KeyRing | None, *, dim: int = DIM, **kw: Any) -> RehearsalMemory:
    return RehearsalMemory.create(path, keys=keys, dim=dim, encoder_name=f"synthetic-{dim}", **kw)


def results(
    mem: RehearsalMemory, queries: np.ndarray, k: int = 10, **kw: Any
) -> list[list[tuple[int, float]]]:
    return [[(h.id, round(h.score, 5)) for h in row] for row in mem.search_vectors(queries, k, **kw)]


def snapshot_state(mem: RehearsalMemory, queries: np.ndarray) -> tuple[int, int, Any]:
    return len(mem), mem.generation, results(mem, queries)


def folder_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(path.iterdir()) if p.is_file())


@pytest.fixture
def filled(tmp_path: Path, keys: KeyRing, rng: np.random.Generator) -> RehearsalMemory:
    mem = make(tmp_path / "mem", keys)
    vectors = unit(rng, 200)
    metas = [
        {"task": f"t{i % 4}", "label": i % 7, "tags": ["safety"] if i % 10 == 0 else []} for i in range(200)
    ]
    mem.add(texts_for(0, 200), vectors=vectors, metadata=metas, tenant="acme")
    return mem


# -- durability --------------------------------------------------------------------------------------


def test_50k_entries_reopen_with_identical_search_results(tmp_path: Path, keys: KeyRing) -> None:
    rng = np.random.default_rng(7)
    dim = 64
    mem = make(tmp_path / "big", keys, dim=dim)
    n, batch = 50_000, 5_000
    for start in range(0, n, batch):
        ids = mem.add(texts_for(start, batch), vectors=unit(rng, batch, dim))
        assert ids == list(range(start, start + batch))
    queries = unit(np.random.default_rng(8), 50, dim)
    before = results(mem, queries)
    gen = mem.generation
    mem.close()
    with RehearsalMemory.open(tmp_path / "big", keys=keys) as again:
        assert len(again) == n
        assert again.generation == gen
        assert results(again, queries) == before
        assert again.get_texts([0, 24_999, 49_999]) == [
            "record number 0",
            "record number 24999",
            "record number 49999",
        ]
    with RehearsalMemory.open(tmp_path / "big", keys=keys, read_only=True) as reader:
        assert results(reader, queries) == before


def test_unsnapshotted_adds_are_replayed_from_sqlite_on_open(
    tmp_path: Path, keys: KeyRing, rng: np.random.Generator
) -> None:
    mem = make(tmp_path / "mem", keys)
    mem.add(texts_for(0, 50), vectors=unit(rng, 50))
    queries = unit(rng, 5)
    before = results(mem, queries)
    # Simulate a crash: drop the handle without close(), so the snapshot stays at generation 0.
    mem._records.close()
    import os

    os.close(mem._lock_fd)  # type: ignore[arg-type]
    with RehearsalMemory.open(tmp_path / "mem", keys=keys) as again:
        assert again._vectors.snapshot_generation == 0
        assert results(again, queries) == before
        assert again.verify()["entries"] == 50


def test_lost_snapshot_is_rebuilt_from_sqlite(
    filled: RehearsalMemory, keys: KeyRing, rng: np.random.Generator
) -> None:
    queries = unit(rng, 5)
    before = results(filled, queries)
    filled.close()
    (filled.path / "index.snap").unlink()
    with RehearsalMemory.open(filled.path, keys=keys) as again:
        assert results(again, queries) == before
        again.verify()


def test_stale_snapshot_temp_files_are_removed_on_open(filled: RehearsalMemory, keys: KeyRing) -> None:
    filled.close()
    stale = filled.path / ".index.snap.tmp-999999"
    stale.write_bytes(b"half-written snapshot")
    with RehearsalMemory.open(filled.path, keys=keys):
        assert not stale.exists()


def test_reader_in_another_process_sees_consistent_results_while_writer_adds(
    tmp_path: Path, keys: KeyRing
) -> None:
    path = tmp_path / "mem"
    seed_vec = _seeded_vector
    with make(path, keys) as mem:
        mem.add([f"seed {s}" for s in range(100)], vectors=np.stack([seed_vec(s) for s in range(100)]))
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER_SCRIPT, str(path), keys.export_base64(), str(tmp_path / "deleted")],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "ready"
        reader = RehearsalMemory.open(path, keys=keys, read_only=True)
        queries = unit(np.random.default_rng(3), 4)
        searches = 0
        checked = 0
        while writer.poll() is None or searches < 5:
            hits = reader.search_vectors(queries, k=8)
            searches += 1
            ids = sorted({h.id for row in hits for h in row})
            texts = reader.texts_by_id(ids)
            for q, row in zip(queries, hits, strict=True):
                assert len(row) == 8
                assert len({h.id for h in row}) == 8
                scores = [h.score for h in row]
                assert scores == sorted(scores, reverse=True)
                for h in row:
                    if h.id in texts:
                        seed = int(texts[h.id].split()[1])
                        # The hit's vector and its text belong together: no torn record.
                        assert h.score == pytest.approx(float(q @ seed_vec(seed)), abs=1e-4)
                        checked += 1
            missing = set(ids) - set(texts)
            if missing:
                deleted = _read_ints(tmp_path / "deleted")
                assert missing <= deleted
        reader.close()
    finally:
        writer.kill()
        _, err = writer.communicate()
    assert writer.returncode in (0, -9), err
    assert searches >= 5
    assert checked > 0
    with RehearsalMemory.open(path, keys=keys) as final:
        final.verify()


def _seeded_vector(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def _read_ints(path: Path) -> set[int]:
    if not path.exists():
        return set()
    return {int(line) for line in path.read_text().split()}


_WRITER_SCRIPT = textwrap.dedent(
    """
    import sys, time, numpy as np
    from rehearsal.crypto.keys import KeyRing
    from rehearsal.memory.facade import RehearsalMemory

    def vec(s):
        v = np.random.default_rng(s).standard_normal(DIM).astype(np.float32)
        return v / np.linalg.norm(v)

    mem = RehearsalMemory.open(sys.argv[1], keys=KeyRing.from_base64(sys.argv[2]))
    print("ready", flush=True)
    seed, end = 100, time.monotonic() + 2.5
    with open(sys.argv[3], "a") as log:
        while time.monotonic() < end:
            seeds = range(seed, seed + 20)
            ids = mem.add([f"seed {s}" for s in seeds], vectors=np.stack([vec(s) for s in seeds]))
            seed += 20
            # Log first, delete second: a reader missing an id finds it in the log afterwards.
            doomed = ids[::5]
            log.write("".join(f"{i}\\n" for i in doomed)); log.flush()
            mem.delete(doomed)
            if seed % 200 == 0:
                mem.checkpoint()
    mem.close()
    """
).replace("DIM", str(DIM))


# -- erasure -----------------------------------------------------------------------------------------


def test_forget_tenant_removes_vectors_texts_and_keys(
    tmp_path: Path, keys: KeyRing, rng: np.random.Generator
) -> None:
    mem = make(tmp_path / "mem", keys)
    acme_vecs, other_vecs = unit(rng, 40), unit(rng, 40)
    acme_ids = mem.add([f"acme secret {i} zebra" for i in range(40)], vectors=acme_vecs, tenant="acme")
    other_ids = mem.add([f"globex note {i}" for i in range(40)], vectors=other_vecs, tenant="globex")
    mem.checkpoint()
    sealed = [
        r[0]
        for r in mem._records.conn.execute(  # type: ignore[attr-defined]
            "SELECT sealed FROM vault_records WHERE id < 40"
        )
    ]
    wrapped = [
        r[0]
        for r in mem._records.conn.execute(  # type: ignore[attr-defined]
            "SELECT wrapped FROM vault_keys k JOIN vault_tenants t ON t.id = k.tenant_id"
            " WHERE t.name = 'acme'"
        )
    ]
    assert len(sealed) == 40
    assert wrapped

    assert mem.forget(tenant="acme") == 40
    assert len(mem) == 40
    for row in mem.search_vectors(acme_vecs, k=80):
        assert not {h.id for h in row} & set(acme_ids)
    with pytest.raises(NotFoundError, match="no text for ids"):
        mem.get_texts(acme_ids[:3])
    assert mem.get_texts(other_ids) == [f"globex note {i}" for i in range(40)]
    mem.close()

    raw = folder_bytes(tmp_path / "mem")
    assert b"acme secret" not in raw
    assert b"zebra" not in raw
    for blob in sealed + wrapped:
        assert blob not in raw
    for v in acme_vecs:
        assert v.tobytes() not in raw
    with RehearsalMemory.open(tmp_path / "mem", keys=keys) as again:
        again.verify()
        assert again.ids() == other_ids
        assert [h.id for h in again.search_vectors(other_vecs[:1], k=1)[0]] == other_ids[:1]


def test_forget_in_embedding_only_store_without_keys_leaves_no_vector_bytes(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    mem = make(tmp_path / "mem", None, embedding_only=True)
    doomed = unit(rng, 30)
    mem.add(None, vectors=doomed, sources=[f"acme/{i}" for i in range(30)], tenant="acme")
    mem.add(None, vectors=unit(rng, 30), sources=[f"globex/{i}" for i in range(30)], tenant="globex")
    mem.forget(tenant="acme")
    mem.close()
    raw = folder_bytes(tmp_path / "mem")
    for v in doomed:
        assert v.tobytes() not in raw
    assert b"acme/1" not in raw


def test_forget_unknown_tenant_is_not_found(filled: RehearsalMemory, rng: np.random.Generator) -> None:
    with pytest.raises(NotFoundError, match="no tenant 'nobody'"):
        filled.forget(tenant="nobody")


# -- bad input leaves the memory unchanged ------------------------------------------------------------

_BAD_CALLS: list[tuple[str, Any, type[Exception], str]] = [
    (
        "nan vector",
        lambda m, v: m.add(["a"], vectors=np.full((1, DIM), np.nan)),
        ValidationError,
        "NaN or inf",
    ),
    (
        "inf vector",
        lambda m, v: m.add(["a", "b"], vectors=np.vstack([v[0], np.full(DIM, np.inf)])),
        ValidationError,
        "vector 1 contains NaN or inf",
    ),
    ("zero vector", lambda m, v: m.add(["a"], vectors=np.zeros((1, DIM))), ValidationError, "all zeros"),
    (
        "wrong dimension",
        lambda m, v: m.add(["a"], vectors=np.ones((1, DIM + 1))),
        DimensionMismatchError,
        "width 33",
    ),
    (
        "query wrong dimension",
        lambda m, v: m.search_vectors(np.ones((1, 5))),
        DimensionMismatchError,
        "width 5",
    ),
    ("empty batch", lambda m, v: m.add([], vectors=np.zeros((0, DIM))), ValidationError, "empty batch"),
    ("vector count", lambda m, v: m.add(["a", "b"], vectors=v[:3]), ValidationError, "3 vectors for 2"),
    (
        "metadata length",
        lambda m, v: m.add(["a", "b"], vectors=v[:2], metadata=[{}]),
        ValidationError,
        "metadata has 1 items for 2",
    ),
    (
        "metadata label type",
        lambda m, v: m.add(["a"], vectors=v[:1], metadata=[{"label": 1.5}]),
        ValidationError,
        r"\['label'\] must be int or str",
    ),
    (
        "unknown filter field",
        lambda m, v: m.search_vectors(v[:1], where={"colour": "red"}),
        ValidationError,
        "unknown filter field 'colour'",
    ),
    (
        "unknown filter op",
        lambda m, v: m.search_vectors(v[:1], where={"task": {"$regex": "x"}}),
        ValidationError,
        r"unknown operator '\$regex'",
    ),
    ("non-str text", lambda m, v: m.add(["a", 3], vectors=v[:2]), ValidationError, r"texts\[1\] must be str"),
    ("bytes texts", lambda m, v: m.add(b"ab", vectors=v[:2]), ValidationError, "list of str"),
    ("blank text", lambda m, v: m.add(["a", "  \n"], vectors=v[:2]), ValidationError, r"texts\[1\] is empty"),
    (
        "invalid tenant",
        lambda m, v: m.add(["a"], vectors=v[:1], tenant="../etc"),
        ValidationError,
        "invalid tenant name",
    ),
    (
        "reserved tenant",
        lambda m, v: m.add(["a"], vectors=v[:1], tenant="_system"),
        ValidationError,
        "invalid tenant name",
    ),
    (
        "delete unknown id",
        lambda m, v: m.delete([0, 10_000]),
        NotFoundError,
        r"no entries with ids \[10000\]",
    ),
    ("delete negative id", lambda m, v: m.delete([-1]), ValidationError, "non-negative int"),
    ("bad k", lambda m, v: m.search_vectors(v[:1], k=0), ValidationError, "k must be a positive int"),
    (
        "sources in text store",
        lambda m, v: m.add(["a"], vectors=v[:1], sources=["s"]),
        ValidationError,
        "only for embedding-only",
    ),
]


@pytest.mark.parametrize(
    ("call", "error", "match"), [c[1:] for c in _BAD_CALLS], ids=[c[0] for c in _BAD_CALLS]
)
def test_bad_input_raises_typed_error_and_changes_nothing(
    filled: RehearsalMemory, rng: np.random.Generator, call: Any, error: type[Exception], match: str
) -> None:
    queries = unit(rng, 3)
    before = snapshot_state(filled, queries)
    with pytest.raises(error, match=match):
        call(filled, unit(rng, 4))
    assert snapshot_state(filled, queries) == before
    filled.verify()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m, v: m.add(["a"], vectors=v[:1]), "opened read-only"),
        (lambda m, v: m.delete([1]), "opened read-only"),
        (lambda m, v: m.forget(tenant="acme"), "opened read-only"),
        (lambda m, v: m.rotate_keys(KeyRing.generate()), "opened read-only"),
        (lambda m, v: m.checkpoint(), "opened read-only"),
        (
            lambda m, v: m.admit(["a"], vectors=v[:1], policy=Reservoir(5), rng=np.random.default_rng(0)),
            "opened read-only",
        ),
    ],
    ids=["add", "delete", "forget", "rotate_keys", "checkpoint", "admit"],
)
def test_writes_on_read_only_memory_raise_and_change_nothing(
    filled: RehearsalMemory, keys: KeyRing, rng: np.random.Generator, call: Any, match: str
) -> None:
    queries = unit(rng, 3)
    reader = RehearsalMemory.open(filled.path, keys=keys, read_only=True)
    before = snapshot_state(reader, queries)
    with pytest.raises(ReadOnlyError, match=match):
        call(reader, unit(rng, 2))
    assert snapshot_state(reader, queries) == before
    reader.close()
    filled.close()
    with RehearsalMemory.open(filled.path, keys=keys) as again:
        assert snapshot_state(again, queries) == before


def test_opening_a_folder_that_is_not_a_memory_fails(tmp_path: Path, keys: KeyRing) -> None:
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("hello")
    with pytest.raises(StoreFormatError, match="is not a rehearsal memory"):
        RehearsalMemory.open(tmp_path / "plain", keys=keys)
    with pytest.raises(NotFoundError, match="folder does not exist"):
        RehearsalMemory.open(tmp_path / "absent", keys=keys)


def test_opening_a_newer_format_version_fails_and_leaves_the_store_usable(
    filled: RehearsalMemory, keys: KeyRing
) -> None:
    filled.close()
    manifest_path = filled.path / "memory.json"
    original = manifest_path.read_bytes()
    manifest = json.loads(original)
    manifest["format"] = 99
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(StoreFormatError, match="format version 99"):
        RehearsalMemory.open(filled.path, keys=keys)
    manifest_path.write_bytes(original)
    with RehearsalMemory.open(filled.path, keys=keys) as again:  # the failed open left no lock behind
        assert len(again) == 200


def test_creating_in_a_non_empty_folder_fails(filled: RehearsalMemory, keys: KeyRing) -> None:
    with pytest.raises(ValidationError, match="is not empty"):
        make(filled.path, keys)


def test_text_store_without_keys_is_refused(tmp_path: Path, filled: RehearsalMemory) -> None:
    with pytest.raises(MissingKeyError, match="needs keys"):
        make(tmp_path / "nokeys", None)
    filled.close()
    with pytest.raises(MissingKeyError, match="is encrypted"):
        RehearsalMemory.open(filled.path)


# -- locking, encoders, keys --------------------------------------------------------------------------


def test_second_writer_is_refused_but_readers_are_allowed(filled: RehearsalMemory, keys: KeyRing) -> None:
    with pytest.raises(StoreLockedError, match="open for writing in another process"):
        RehearsalMemory.open(filled.path, keys=keys)
    with RehearsalMemory.open(filled.path, keys=keys, read_only=True) as reader:
        assert len(reader) == 200
    filled.close()
    with RehearsalMemory.open(filled.path, keys=keys) as writer:
        assert len(writer) == 200


class _FakeEncoder:
    def __init__(self, name: str, dim: int = DIM) -> None:
        self.name, self.dim = name, dim

    def encode(self, texts: Any) -> np.ndarray:
        return unit(np.random.default_rng(len(texts)), len(texts), self.dim)


def test_open_with_a_different_encoder_fails(filled: RehearsalMemory, keys: KeyRing) -> None:
    filled.close()
    with pytest.raises(EncoderMismatchError, match="built with encoder 'synthetic-32', got 'other-model'"):
        RehearsalMemory.open(filled.path, keys=keys, encoder=_FakeEncoder("other-model"))
    with RehearsalMemory.open(filled.path, keys=keys, encoder=_FakeEncoder(ENCODER)) as again:
        assert len(again) == 200


def test_rotate_keys_then_only_the_new_key_opens(
    filled: RehearsalMemory, keys: KeyRing, rng: np.random.Generator
) -> None:
    queries = unit(rng, 3)
    before = results(filled, queries)
    new = KeyRing.generate()
    filled.rotate_keys(new)
    filled.add(["after rotation"], vectors=unit(rng, 1))
    filled.close()
    with pytest.raises(WrongKeyError, match="does not open this vault"):
        RehearsalMemory.open(filled.path, keys=keys)
    with RehearsalMemory.open(filled.path, keys=new) as again:
        assert again.verify()["texts"] == 201
        # The same neighbours as before the rotation, once the one entry added after it is set aside.
        after = results(again, queries, k=11)
        assert [[hit for hit in row if hit[0] != 200][:10] for row in after] == before
        assert again.get_texts([0, 200]) == ["record number 0", "after rotation"]


def test_vectors_at_rest_are_encrypted(tmp_path: Path, keys: KeyRing, rng: np.random.Generator) -> None:
    mem = make(tmp_path / "mem", keys)
    vectors = unit(rng, 20)
    mem.add(texts_for(0, 20), vectors=vectors)
    mem.close()
    raw = folder_bytes(tmp_path / "mem")
    assert (tmp_path / "mem" / "index.snap").stat().st_size > 20 * DIM * 4
    for v in vectors:
        assert v.tobytes() not in raw
        assert v[:8].tobytes() not in raw
        assert v[:8].astype(np.float16).tobytes() not in raw  # the form vectors rest in (format 2)
    assert b"record number" not in raw


def test_embedding_only_store_without_keys_keeps_plain_vectors(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    # The documented trade-off: without keys the vectors (invertible into text) sit in plain bytes
    # (float16 at rest since format 2).
    mem = make(tmp_path / "mem", None, embedding_only=True)
    vectors = unit(rng, 5)
    mem.add(None, vectors=vectors, sources=[f"doc/{i}" for i in range(5)])
    mem.close()
    assert vectors[0].astype(np.float16).tobytes() in folder_bytes(tmp_path / "mem")


# -- embedding-only mode ------------------------------------------------------------------------------


def test_embedding_only_resolver_erasures_are_skipped_and_purged(
    tmp_path: Path, keys: KeyRing, rng: np.random.Generator
) -> None:
    upstream = {f"doc/{i}": f"text {i}" for i in range(30)}

    def resolver(sources: list[str]) -> list[str | None]:
        return [upstream.get(s) for s in sources]

    mem = make(tmp_path / "mem", keys, embedding_only=True, resolver=resolver)
    vectors = unit(rng, 30)
    ids = mem.add(None, vectors=vectors, sources=[f"doc/{i}" for i in range(30)], tenant="acme")
    assert b"text 3" not in folder_bytes(tmp_path / "mem")
    for i in (3, 4, 17):
        del upstream[f"doc/{i}"]
    found = mem.texts_by_id(ids)
    assert sorted(found) == [i for i in ids if i not in (3, 4, 17)]
    assert found[5] == "text 5"
    assert len(mem) == 27
    hits = mem.search_vectors(vectors[[3, 4, 17]], k=30)
    assert not {h.id for row in hits for h in row} & {3, 4, 17}
    with pytest.raises(NotFoundError, match=r"no text for ids \[3\]"):
        mem.get_texts([3])
    mem.close()
    with RehearsalMemory.open(tmp_path / "mem", keys=keys, resolver=resolver) as again:
        assert len(again) == 27
        again.verify()


def test_embedding_only_store_needs_sources(tmp_path: Path, rng: np.random.Generator) -> None:
    mem = make(tmp_path / "mem", None, embedding_only=True)
    with pytest.raises(ValidationError, match="needs 'sources'"):
        mem.add(None, vectors=unit(rng, 2))
    with pytest.raises(ValidationError, match="sources has 1 items for 2"):
        mem.add(None, vectors=unit(rng, 2), sources=["a"])
    assert len(mem) == 0
    assert mem.generation == 0


# -- search, filters, deletion ------------------------------------------------------------------------


def test_search_returns_exact_neighbours_best_first(
    filled: RehearsalMemory, rng: np.random.Generator
) -> None:
    stored = np.stack([_stored_vector(filled, i) for i in range(200)])
    queries = unit(rng, 5)
    hits = filled.search_vectors(queries, k=5)
    expected = np.argsort(-(queries @ stored.T), axis=1)[:, :5]
    assert [[h.id for h in row] for row in hits] == expected.tolist()
    assert hits[0][0].metadata["tenant"] == "acme"


def _stored_vector(mem: RehearsalMemory, entry_id: int) -> np.ndarray:
    _ids, vectors = mem._vectors.unseal(mem._records.vectors_of([entry_id]))
    return vectors[0]


def test_where_restricts_search_to_matching_entries(
    filled: RehearsalMemory, rng: np.random.Generator
) -> None:
    queries = unit(rng, 3)
    for where in (
        {"task": "t1"},
        {"label": {"$in": [2, 3]}},
        {"tags": "safety"},
        {"id": {"$lt": 50}},
        {"task": {"$ne": "t0"}, "label": 4},
    ):
        allowed = set(filled.ids(where=where))
        assert allowed
        for row in filled.search_vectors(queries, k=10, where=where):
            assert row
            assert {h.id for h in row} <= allowed
    assert filled.search_vectors(queries, k=3, where={"task": "nope"}) == [[], [], []]


def test_delete_removes_from_search_and_text(filled: RehearsalMemory, keys: KeyRing) -> None:
    vectors = np.stack([_stored_vector(filled, i) for i in (5, 6)])
    assert filled.delete([5, 6]) == 2
    assert len(filled) == 198
    for row in filled.search_vectors(vectors, k=3):
        assert not {5, 6} & {h.id for h in row}
    assert filled.texts_by_id([5, 6, 7]) == {7: "record number 7"}
    filled.close()
    with RehearsalMemory.open(filled.path, keys=keys) as again:
        assert len(again) == 198
        assert 5 not in again.ids()


def test_ids_are_never_reused_after_delete(filled: RehearsalMemory, rng: np.random.Generator) -> None:
    filled.delete([199])
    assert filled.add(["new"], vectors=unit(rng, 1)) == [200]


# -- admission ----------------------------------------------------------------------------------------


def test_reservoir_admission_keeps_capacity_and_evicts_from_index_and_vault(
    tmp_path: Path, keys: KeyRing, rng: np.random.Generator
) -> None:
    mem = make(tmp_path / "mem", keys)
    all_vectors = unit(rng, 500)
    for start in range(0, 500, 50):
        mem.admit(
            texts_for(start, 50), vectors=all_vectors[start : start + 50], policy=Reservoir(100), rng=rng
        )
        assert len(mem) == min(100, start + 50)
    kept = mem.ids()
    assert len(kept) == 100
    assert max(kept) > 100
    assert len(mem._keyed.ids()) == 100  # type: ignore[union-attr]
    assert mem.verify()["texts"] == 100
    evicted = sorted(set(range(500)) - set(kept))[:20]
    for row in mem.search_vectors(all_vectors[evicted], k=100):
        assert {h.id for h in row} <= set(kept)
    assert mem.texts_by_id(evicted) == {}
    # The reservoir's count of items seen is stored with the memory.
    assert json.loads(mem._records.get_meta("policy.reservoir") or "{}")["seen"] == 500


def test_priority_admission_keeps_safety_items(
    tmp_path: Path, keys: KeyRing, rng: np.random.Generator
) -> None:
    mem = make(tmp_path / "mem", keys)
    policy = Priority(20)
    metas = [{"label": "a", "tags": ["safety"] if i < 5 else []} for i in range(20)]
    mem.admit(texts_for(0, 20), vectors=unit(rng, 20), metadata=metas, policy=policy, rng=rng)
    mem.admit(
        texts_for(20, 30), vectors=unit(rng, 30), metadata=[{"label": "b"}] * 30, policy=policy, rng=rng
    )
    assert len(mem) == 20
    assert set(range(5)) <= set(mem.ids())
    assert mem.verify()["entries"] == 20


# -- real text ----------------------------------------------------------------------------------------


def test_real_text_search_finds_the_paraphrase(tmp_path: Path, keys: KeyRing, encoder: Any) -> None:
    mem = RehearsalMemory.create(tmp_path / "mem", keys=keys, encoder=encoder)
    corpus = [
        "How do I reset my password?",
        "The invoice total was charged twice to my credit card.",
        "My parcel has not arrived after two weeks.",
        "The app crashes when I open the camera.",
        "Can I change the delivery address of my order?",
    ]
    ids = mem.add(corpus, metadata=[{"task": "support"}] * 5)
    hits = mem.search(["I was billed two times for one purchase", "forgot my login password"], k=2)
    assert hits[0][0].id == ids[1]
    assert hits[1][0].id == ids[0]
    assert hits[0][0].score > hits[0][1].score
    assert mem.get_texts([hits[0][0].id]) == [corpus[1]]


def test_real_text_add_embeds_like_the_encoder(tmp_path: Path, keys: KeyRing, encoder: Any) -> None:
    mem = RehearsalMemory.create(tmp_path / "mem", keys=keys, encoder=encoder)
    texts = ["a cat sat on the mat", "stock markets fell sharply"]
    mem.add(texts)
    direct = encoder.encode(texts)
    hits = mem.search_vectors(direct, k=1)
    assert [row[0].id for row in hits] == [0, 1]
    assert hits[0][0].score == pytest.approx(1.0, abs=1e-4)
    mem.close()
    with RehearsalMemory.open(tmp_path / "mem", keys=keys, read_only=True) as reader:
        assert reader.search(["a kitten on a rug"], k=1)[0][0].id == 0
