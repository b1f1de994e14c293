"""Read-only connections open by URI: folder names that are URI syntax must still work."""

import numpy as np

from rehearsal.crypto.keys import KeyRing
from rehearsal.memory.facade import RehearsalMemory


def test_read_only_memory_opens_in_a_folder_named_with_uri_characters(tmp_path):
    keys = KeyRing.generate()
    path = tmp_path / "run #3 ?50%"
    vectors = np.eye(4, dtype=np.float32)
    with RehearsalMemory.create(path, keys=keys, dim=4, encoder_name="synthetic") as mem:
        mem.add(["a", "b", "c", "d"], vectors=vectors)
    with RehearsalMemory.open(path, keys=keys, read_only=True) as reader:
        assert reader.search_vectors(vectors[:1], k=1)[0][0].id == 0
        assert reader.get_texts([3]) == ["d"]


def test_a_memory_whose_database_is_not_sqlite_is_a_store_format_error(tmp_path):
    import pytest

    from rehearsal.errors import StoreFormatError

    keys = KeyRing.generate()
    with RehearsalMemory.create(tmp_path / "m", keys=keys, dim=4, encoder_name="synthetic"):
        pass
    (tmp_path / "m" / "memory.sqlite").write_bytes(b"not sqlite at all" * 200)
    for name in ("memory.sqlite-wal", "memory.sqlite-shm"):
        (tmp_path / "m" / name).unlink(missing_ok=True)
    with pytest.raises(StoreFormatError, match="not a readable SQLite database"):
        RehearsalMemory.open(tmp_path / "m", keys=keys)
