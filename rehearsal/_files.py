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

__all__ = ["atomic_write", "read_json", "remove_stale_temps"]


def atomic_write(path: Path, *parts: bytes) -> None:
    """Write ``parts`` back to back as the new content of ``path``, atomically and durably."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
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
