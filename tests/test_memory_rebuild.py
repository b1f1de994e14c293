"""A rebuild cut short (the writer died during it) is redone the next time a writer opens the memory."""

import numpy as np

from rehearsal.crypto.keys import KeyRing
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.store.faiss.follower import FaissVectorIndex


def test_writer_open_finishes_an_interrupted_rebuild(tmp_path, monkeypatch):
    keys = KeyRing.generate()
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(50_500, 8)).astype(np.float32)
    # Fault injection: the rebuild that crossing 50k entries triggers "never finishes".
    monkeypatch.setattr(FaissVectorIndex, "rebuild_if_outgrown", lambda self: False)
    with RehearsalMemory.create(tmp_path / "m", keys=keys, dim=8, encoder_name="synthetic") as mem:
        for start in range(0, len(vectors), 10_100):
            chunk = vectors[start : start + 10_100]
            mem.add([f"t{i}" for i in range(len(chunk))], vectors=chunk)
        assert mem.stats()["index_spec"] == "IDMap,Flat"
    monkeypatch.undo()

    with RehearsalMemory.open(tmp_path / "m", keys=keys, read_only=True) as reader:
        assert reader.stats()["index_spec"] == "IDMap,Flat"  # readers never rebuild
    with RehearsalMemory.open(tmp_path / "m", keys=keys) as writer:
        assert writer.stats()["index_spec"].startswith("IVF")
        assert writer.verify()["entries"] == len(vectors)
        hit = writer.search_vectors(vectors[:1], k=1)[0][0]
        assert hit.id == 0


def test_a_memory_with_an_sqfp16_snapshot_opens_and_its_writer_retrains_to_sq8(tmp_path, monkeypatch):
    # A format-2 memory written while IVF codes were SQfp16: both modules' rule patched back to it.
    from rehearsal.store.faiss import index as index_module
    from rehearsal.store.faiss import spec as spec_module

    keys = KeyRing.generate()
    vectors = np.random.default_rng(1).normal(size=(50_500, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    monkeypatch.setattr(spec_module, "IVF_CODES", "SQfp16")
    monkeypatch.setattr(index_module, "IVF_CODES", "SQfp16")
    with RehearsalMemory.create(tmp_path / "m", keys=keys, dim=8, encoder_name="synthetic") as mem:
        mem.add([f"t{i}" for i in range(len(vectors))], vectors=vectors)
        assert mem.stats()["index_spec"].endswith(",SQfp16")
    monkeypatch.undo()

    with RehearsalMemory.open(tmp_path / "m", keys=keys, read_only=True) as reader:
        assert reader.stats()["index_spec"].endswith(",SQfp16")  # read as it is; readers never rebuild
        assert reader.search_vectors(vectors[:1], k=1)[0][0].id == 0
    with RehearsalMemory.open(tmp_path / "m", keys=keys) as writer:
        assert writer.stats()["index_spec"].endswith(",SQ8")
        assert writer.verify()["entries"] == len(vectors)
        assert writer.search_vectors(vectors[:1], k=1)[0][0].id == 0
    with RehearsalMemory.open(tmp_path / "m", keys=keys, read_only=True) as reader:
        assert reader.stats()["index_spec"].endswith(",SQ8")  # the retrained snapshot was written
