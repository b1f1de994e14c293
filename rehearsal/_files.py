"""Atomic, durable files: write a temporary file, fsync it, rename it over the old one, fsync the folder.

A reader (or a crash) sees either the old content or the new one, never a torn file. Used for the memory's
manifest and index snapshot, the audit log's head and the versions file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rehearsal.errors import StoreFormatError

__all__ = [
    "OWNER_ONLY_DIR",
    "OWNER_ONLY_FILE",
    "atomic_write",
    "create_private",
    "read_json",
    "remove_stale_temps",
]

# A memory's files hold sealed records, wrapped keys and (embedding-only) plain vectors: whatever the
# umask, only the owner may read them.
OWNER_ONLY_FILE, OWNER_ONLY_DIR = 0o600, 0o700


def create_private(path: Path) -> None:
    """Create ``path`` as an empty owner-only file if it does not exist (an existing file keeps its mode)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, OWNER_ONLY_FILE)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, OWNER_ONLY_FILE)  # the umask only removes bits; this sets exactly these
    finally:
        os.close(fd)


def atomic_write(path: Path, *parts: bytes) -> None:
    """Write ``parts`` back to back as the new content of ``path``, atomically and durably."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, OWNER_ONLY_FILE)
        os.fchmod(fd, OWNER_ONLY_FILE)
        with open(fd, "wb") as f:
            for part in parts:
                f.write(part)  # parts, not one joined buffer: a large snapshot is not copied again
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        # A failed write (a full disk) must not leave a half-written temp file behind; only a killed
        # process leaves one, and the next writer's open removes it (remove_stale_temps).
        tmp.unlink(missing_ok=True)
        raise
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
