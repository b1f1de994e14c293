"""Atomic files: the memory's manifest and its index snapshot.

A snapshot is written to a temporary file, fsynced, renamed over the old one and the folder fsynced, so
a reader (or a crash) sees either the old snapshot or the new one, never a torn file. FAISS's own
``write_index`` truncates in place, which is why the index goes through bytes here instead.

Snapshot layout: ``MAGIC`` (8 bytes) | generation (uint64 LE) | flags (1 byte: bit 0 = sealed) | payload.
A sealed payload is AES-GCM with associated data binding the generation, so an old snapshot cannot be
passed off as a newer one.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rehearsal.errors import IntegrityError, StoreFormatError

__all__ = ["atomic_write", "read_json", "read_snapshot", "remove_stale_temps", "write_snapshot"]

MAGIC = b"RHSNAP01"
_HEADER = struct.Struct("<8sQB")


def atomic_write(path: Path, *parts: bytes) -> None:
    """Write ``parts`` back to back as the new content of ``path``, atomically and durably."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        for part in parts:
            f.write(part)  # parts, not one joined buffer: a large snapshot is not copied again
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def remove_stale_temps(folder: Path) -> int:
    """Delete temporary files left by a writer killed inside ``atomic_write``; returns how many.

    Call only while holding the writer lock. A leftover may hold an old snapshot, i.e. vectors of a
    since-forgotten tenant, so it must not outlive the next writer's open.
    """
    removed = 0
    for leftover in folder.glob(".*.tmp-*"):
        leftover.unlink(missing_ok=True)
        removed += 1
    return removed


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StoreFormatError(f"cannot read {path.name} in {str(path.parent)!r}: {exc}") from exc
    if not isinstance(data, dict):
        raise StoreFormatError(f"{path.name} in {str(path.parent)!r} is not a JSON object")
    return data


def write_snapshot(path: Path, generation: int, payload: bytes, *, sealed: bool) -> None:
    atomic_write(path, _HEADER.pack(MAGIC, generation, 1 if sealed else 0), payload)


def read_snapshot(path: Path, unseal: Callable[[int, memoryview], bytes] | None) -> tuple[int, bytes]:
    """Return (generation, index bytes); ``unseal(generation, payload)`` opens a sealed payload."""
    with open(path, "rb") as f:
        header = f.read(_HEADER.size)
        if len(header) < _HEADER.size:
            raise IntegrityError(f"index snapshot {path.name} is truncated ({len(header)} bytes)")
        magic, generation, flags = _HEADER.unpack(header)
        if magic != MAGIC:
            raise StoreFormatError(f"{path.name} is not a rehearsal index snapshot")
        if not flags & 1:
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
