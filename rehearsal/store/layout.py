"""The files of a memory's folder other than its database and snapshot: the manifest and the writer lock.

``memory.json`` (plain JSON, written last at creation so a half-created folder is plainly "not a memory")
records the format version, the store id, the mode and which encoder made the vectors. ``writer.lock`` is
held with ``flock`` by the one process that has the memory open for writing; the OS drops it when that
process dies, so a crash never leaves a stale lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rehearsal._files import atomic_write, read_json
from rehearsal.errors import (
    EncoderMismatchError,
    NotFoundError,
    StoreFormatError,
    StoreLockedError,
    ValidationError,
)

__all__ = [
    "DB_FILE",
    "FORMAT_VERSION",
    "acquire_writer_lock",
    "is_memory_folder",
    "new_manifest",
    "peek_manifest",
    "read_manifest",
    "write_manifest",
]

# Format 2: authenticated rows, commit records and head file, float16 vectors; opening migrates format 1.
FORMAT_VERSION = 2
MANIFEST_FILE, DB_FILE, LOCK_FILE = "memory.json", "memory.sqlite", "writer.lock"


def is_memory_folder(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` holds a memory (its manifest is the last file creation writes)."""
    return (Path(folder) / MANIFEST_FILE).is_file()


def peek_manifest(folder: str | os.PathLike[str]) -> Any:
    """The manifest as written, unchecked, for a caller deciding how to open the memory (is it
    encrypted, which encoder); None when it is missing or not JSON: opening then says what is wrong."""
    try:
        return json.loads((Path(folder) / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def check_new_folder(folder: Path) -> None:
    if folder.exists() and any(folder.iterdir()):
        raise ValidationError(f"{str(folder)!r} is not empty; a memory is created in a new or empty folder")


def new_manifest(*, embedding_only: bool, encrypted: bool, encoder: tuple[str, int]) -> dict[str, Any]:
    return {
        "format": FORMAT_VERSION,
        "store_id": uuid.uuid4().hex,
        "embedding_only": embedding_only,
        "encrypted": encrypted,
        "encoder": {"name": encoder[0], "dim": encoder[1]},
        "created_at": time.time(),
    }


def write_manifest(folder: Path, manifest: Mapping[str, Any]) -> None:
    atomic_write(folder / MANIFEST_FILE, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())


def read_manifest(folder: Path, encoder_name: str | None) -> dict[str, Any]:
    """The manifest of an existing memory, refusing what this version cannot read or a foreign encoder."""
    if not folder.is_dir():
        raise NotFoundError(f"no memory at {str(folder)!r}: folder does not exist")
    if not (folder / MANIFEST_FILE).is_file() or not (folder / DB_FILE).is_file():
        raise StoreFormatError(f"{str(folder)!r} is not a rehearsal memory (no {MANIFEST_FILE} or {DB_FILE})")
    manifest = read_json(folder / MANIFEST_FILE)
    version = manifest.get("format")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise StoreFormatError(
            f"{str(folder)!r} has format version {version!r}; this rehearsal reads up to {FORMAT_VERSION}"
        )
    _check_fields(folder, manifest)
    recorded = manifest["encoder"]["name"]
    if encoder_name is not None and encoder_name != recorded:
        raise EncoderMismatchError(f"memory was built with encoder {recorded!r}, got {encoder_name!r}")
    return manifest


def _check_fields(folder: Path, manifest: dict[str, Any]) -> None:
    """StoreFormatError naming the first field the rest of opening needs that is absent or mistyped (a
    damaged manifest), before anything reads it."""
    encoder = manifest.get("encoder")
    fields = {
        "store_id": isinstance(manifest.get("store_id"), str),
        "embedding_only": isinstance(manifest.get("embedding_only"), bool),
        "encrypted": isinstance(manifest.get("encrypted"), bool),
        "encoder": isinstance(encoder, dict)
        and isinstance(encoder.get("name"), str)
        and type(encoder.get("dim")) is int
        and encoder["dim"] > 0,
    }
    for name, ok in fields.items():
        if not ok:
            raise StoreFormatError(
                f"{MANIFEST_FILE} of {str(folder)!r} is damaged: field {name!r} is missing or wrong"
            )


def acquire_writer_lock(folder: Path) -> int:
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreLockedError(
            f"memory at {str(folder)!r} is open for writing in another process; open it with read_only=True"
        ) from None
    return fd
