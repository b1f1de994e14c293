"""``memory.gen``: the last committed generation of the embedded store, kept outside its database.

SQLite drops a WAL tail whose checksums fail (a flipped byte, a truncated file) without a word, and a
database file can be put back from an older copy: the database alone then looks whole at an earlier
generation. After every commit the catalog writes (generation, entry count) here, tagged like its rows
(see :mod:`rehearsal.store.authenticity`); opening refuses a database behind it.

Two fixed 40-byte slots, written alternately (slot = generation % 2) in place and fdatasync'ed: a write cut
short by a crash tears only the slot being written, and the other still holds the generation before, which
the database has. The highest slot that checks out is the head.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from rehearsal._files import OWNER_ONLY_FILE
from rehearsal.errors import IntegrityError
from rehearsal.store.authenticity import MAC_BYTES, CatalogAuthenticator

__all__ = ["HEAD_FILE", "GenerationHead"]

HEAD_FILE = "memory.gen"
_MAGIC = b"RHGEN002"
_SLOT = struct.Struct(f">8sQQ{MAC_BYTES}s")


class GenerationHead:
    """The two-slot head file of one store folder."""

    def __init__(self, folder: Path, auth: CatalogAuthenticator) -> None:
        self.path = folder / HEAD_FILE
        self._auth = auth

    def _slot(self, generation: int, count: int) -> bytes:
        return _SLOT.pack(_MAGIC, generation, count, self._auth.head_tag(generation, count))

    def create(self, generation: int, count: int) -> None:
        """Both slots at ``generation`` (a new store, or one just migrated to format 2)."""
        slot = self._slot(generation, count)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, OWNER_ONLY_FILE)
        try:
            os.write(fd, slot + slot)
            os.fsync(fd)
        finally:
            os.close(fd)

    def write(self, generation: int, count: int) -> None:
        """Record a commit that is already durable in the database."""
        fd = os.open(self.path, os.O_WRONLY)
        try:
            os.pwrite(fd, self._slot(generation, count), (generation % 2) * _SLOT.size)
            os.fdatasync(fd)
        finally:
            os.close(fd)

    def read(self) -> tuple[int, int]:
        """(generation, entry count) of the last recorded commit; IntegrityError if the file is missing or
        neither slot checks out."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            raise IntegrityError(
                f"{HEAD_FILE} is missing: the store cannot tell whether commits were lost"
            ) from None
        best: tuple[int, int] | None = None
        for start in (0, _SLOT.size):
            raw = data[start : start + _SLOT.size]
            if len(raw) != _SLOT.size:
                continue
            magic, generation, count, tag = _SLOT.unpack(raw)
            if magic != _MAGIC or tag != self._auth.head_tag(generation, count):
                continue
            if best is None or generation > best[0]:
                best = (generation, count)
        if best is None:
            raise IntegrityError(f"{HEAD_FILE} is damaged: neither of its slots authenticates")
        return best
