"""``memory.gen``: the last committed generation of the embedded store, kept outside its database.

SQLite drops a WAL tail whose checksums fail (a flipped byte, a truncated file) without a word, and a
database file can be put back from an older copy: the database alone then looks whole at an earlier
generation. After every commit the catalog writes (generation, entry count) here, tagged like its rows
(see :mod:`rehearsal.store.authenticity`); opening refuses a database behind it.

Each slot also records the commit's nonce, a random value each commit record carries: two copies of one
store (a deployment's memory copied from the same source as another's) that each committed since they
were copied differ there even at the same generation and count, so one copy's database put in the other's
folder is refused rather than read as its own. (A copy further ahead than this folder's head is not told
apart: a head left behind its database is allowed, since a commit stays durable when its head write fails.)

Two fixed 48-byte slots, written alternately (slot = generation % 2) in place and fdatasync'ed: a write cut
short by a crash tears only the slot being written, and the other still holds the generation before, which
the database has. The highest slot that checks out is the head. A head file of the format before nonces
(two 40-byte slots) is still read, and a writer's open rewrites it.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import NamedTuple

from rehearsal._files import OWNER_ONLY_FILE
from rehearsal.errors import IntegrityError
from rehearsal.store.authenticity import MAC_BYTES, CatalogAuthenticator

__all__ = ["HEAD_FILE", "GenerationHead", "Head"]

HEAD_FILE = "memory.gen"
_MAGIC = b"RHGEN003"
_SLOT = struct.Struct(f">8sQQ8s{MAC_BYTES}s")
_OLD_MAGIC = b"RHGEN002"  # slots without a nonce
_OLD_SLOT = struct.Struct(f">8sQQ{MAC_BYTES}s")
_NO_NONCE = bytes(8)  # a commit record made before nonces


class Head(NamedTuple):
    """A recorded commit: its generation, entry count and nonce (None: recorded before nonces)."""

    generation: int
    entries: int
    nonce: str | None


class GenerationHead:
    """The two-slot head file of one store folder."""

    def __init__(self, folder: Path, auth: CatalogAuthenticator) -> None:
        self.path = folder / HEAD_FILE
        self._auth = auth

    def _slot(self, generation: int, count: int, nonce: str | None) -> bytes:
        raw = _NO_NONCE if nonce is None else bytes.fromhex(nonce)
        return _SLOT.pack(_MAGIC, generation, count, raw, self._tag(generation, count, raw))

    def _tag(self, generation: int, count: int, nonce: bytes) -> bytes:
        return self._auth.tag(b"head+nonce", generation.to_bytes(8, "big") + count.to_bytes(8, "big") + nonce)

    def create(self, generation: int, count: int, nonce: str | None) -> None:
        """Both slots at ``generation`` (a new store, one just migrated, or a head of the format before
        nonces that a writer rewrites)."""
        slot = self._slot(generation, count, nonce)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, OWNER_ONLY_FILE)
        try:
            os.write(fd, slot + slot)
            os.fsync(fd)
        finally:
            os.close(fd)

    def write(self, generation: int, count: int, nonce: str | None) -> None:
        """Record a commit that is already durable in the database."""
        fd = os.open(self.path, os.O_WRONLY)
        try:
            os.pwrite(fd, self._slot(generation, count, nonce), (generation % 2) * _SLOT.size)
            os.fdatasync(fd)
        finally:
            os.close(fd)

    def read(self) -> Head:
        """The last recorded commit; IntegrityError if the file is missing or neither slot checks out."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            raise IntegrityError(
                f"{HEAD_FILE} is missing: the store cannot tell whether commits were lost"
            ) from None
        best: Head | None = None
        old = len(data) == 2 * _OLD_SLOT.size
        for slot in (0, 1):
            head = self._old_slot(data, slot) if old else self._read_slot(data, slot)
            # Two slots at one generation (a migration's commit): the one written last, at generation % 2.
            if head is not None and (
                best is None
                or head.generation > best.generation
                or (head.generation == best.generation and slot == head.generation % 2)
            ):
                best = head
        if best is None:
            raise IntegrityError(f"{HEAD_FILE} is damaged: neither of its slots authenticates")
        return best

    def _read_slot(self, data: bytes, slot: int) -> Head | None:
        raw = data[slot * _SLOT.size : (slot + 1) * _SLOT.size]
        if len(raw) != _SLOT.size:
            return None
        magic, generation, count, nonce, tag = _SLOT.unpack(raw)
        if magic != _MAGIC or tag != self._tag(generation, count, nonce):
            return None
        return Head(generation, count, None if nonce == _NO_NONCE else nonce.hex())

    def _old_slot(self, data: bytes, slot: int) -> Head | None:
        raw = data[slot * _OLD_SLOT.size : (slot + 1) * _OLD_SLOT.size]
        magic, generation, count, tag = _OLD_SLOT.unpack(raw)
        if magic != _OLD_MAGIC or tag != self._auth.head_tag(generation, count):
            return None
        return Head(generation, count, None)

    def is_old(self) -> bool:
        """Whether the file is of the format before nonces (a writer rewrites it)."""
        try:
            return self.path.stat().st_size == 2 * _OLD_SLOT.size
        except FileNotFoundError:
            return False
