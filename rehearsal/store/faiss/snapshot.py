"""The index snapshot file, written atomically (see ``rehearsal._files``). FAISS's own ``write_index``
truncates in place, which is why the index goes through bytes here instead.

Layout: ``MAGIC`` (8 bytes) | generation (uint64 LE) | flags (1 byte: bit 0 = sealed) | payload.
A sealed payload is AES-GCM with associated data binding the generation, so an old snapshot cannot be
passed off as a newer one.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Callable
from pathlib import Path

from rehearsal._files import atomic_write
from rehearsal.errors import IntegrityError, StoreFormatError

__all__ = ["MAGIC", "read_snapshot", "write_snapshot"]

MAGIC = b"RHSNAP01"
_HEADER = struct.Struct("<8sQB")


def write_snapshot(path: Path, generation: int, payload: bytes, *, sealed: bool) -> None:
    atomic_write(path, _HEADER.pack(MAGIC, generation, 1 if sealed else 0), payload)


def read_snapshot(path: Path, unseal: Callable[[int, memoryview], bytes] | None) -> tuple[int, bytes]:
    """Return (generation, index bytes); ``unseal(generation, payload)`` opens a sealed payload, and
    with it given (a store with keys) an unsealed snapshot is an IntegrityError."""
    with open(path, "rb") as f:
        header = f.read(_HEADER.size)
        if len(header) < _HEADER.size:
            raise IntegrityError(f"index snapshot {path.name} is truncated ({len(header)} bytes)")
        magic, generation, flags = _HEADER.unpack(header)
        if magic != MAGIC:
            raise StoreFormatError(f"{path.name} is not a rehearsal index snapshot")
        if not flags & 1:
            if unseal is not None:
                # Unsealed bytes carry only a checksum anyone can recompute: in a store with keys they
                # could be planted by whoever can write the folder, no key needed.
                raise IntegrityError(f"index snapshot {path.name} is not sealed, in a store with keys")
            return generation, f.read()
        if unseal is None:
            raise IntegrityError(f"index snapshot {path.name} is sealed but the store has no keys")
        if os.fstat(f.fileno()).st_size == _HEADER.size:
            raise IntegrityError(f"index snapshot {path.name} has no payload")
        # Decrypt straight from the page cache: reading a gigabyte-sized file into a bytes object first
        # costs as much as the decryption itself. The map is left to the garbage collector rather than
        # closed here, since views of it may still be referenced by an exception's traceback.
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    return generation, unseal(generation, memoryview(mapped)[_HEADER.size :])
