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
