"""Making and opening a memory's folder: the manifest, the writer lock and the stores, in a safe order.

A new memory's manifest is written last (by the facade, once its handle exists): a folder without one is
"not a memory", so a crash in the middle of creating one is obvious rather than half-readable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rehearsal._files import OWNER_ONLY_DIR, remove_stale_temps
from rehearsal.crypto.keys import KeyRing
from rehearsal.errors import MissingKeyError
from rehearsal.store.layout import (
    acquire_writer_lock,
    check_new_folder,
    new_manifest,
    read_manifest,
    write_manifest,
)
from rehearsal.store.registry import Backends, create_backends, folder_of, open_backends

__all__ = ["Opened", "create_parts", "finish_create", "open_parts"]


@dataclass
class Opened:
    """What a memory handle is built from."""

    folder: Path
    manifest: dict[str, Any]
    stores: Backends
    keys: KeyRing | None
    lock_fd: int | None  # the writer lock (None for a reader)
    vectors: str | None = None  # the vector server given at opening (None: the one recorded, or FAISS)


def create_parts(
    location: str | os.PathLike[str],
    *,
    keys: KeyRing | None,
    embedding_only: bool,
    identity: tuple[str, int],
    vectors: str | None = None,
) -> Opened:
    """Empty stores in a new or empty folder, with the writer lock held; the manifest is not written yet."""
    folder = folder_of(location)
    if not embedding_only and keys is None:
        raise MissingKeyError("a memory that stores text needs keys (KeyRing); or pass embedding_only=True")
    check_new_folder(folder)
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, OWNER_ONLY_DIR)  # the memory's own folder, whatever the umask (its parents keep theirs)
    manifest = new_manifest(embedding_only=embedding_only, encrypted=keys is not None, encoder=identity)
    stores = create_backends(folder, keys=keys, dim=identity[1], vectors=vectors)
    return Opened(folder, manifest, stores, keys, acquire_writer_lock(folder), vectors)


def finish_create(opened: Opened) -> None:
    write_manifest(opened.folder, opened.manifest)


def open_parts(
    location: str | os.PathLike[str],
    *,
    keys: KeyRing | None,
    read_only: bool,
    encoder_name: str | None,
    vectors: str | None = None,
) -> Opened:
    """The stores of an existing memory (a writer takes the lock and clears a crashed writer's temp files)."""
    folder = folder_of(location)
    manifest = read_manifest(folder, encoder_name)
    if manifest["encrypted"] and keys is None:
        raise MissingKeyError(f"memory at {str(folder)!r} is encrypted; pass keys=KeyRing...")
    if not manifest["encrypted"]:
        # A key in the environment must not stop anyone opening an unencrypted embedding-only memory.
        keys = None
    lock_fd = None if read_only else acquire_writer_lock(folder)
    try:
        if lock_fd is not None:
            remove_stale_temps(folder)
        dim = int(manifest["encoder"]["dim"])
        stores = open_backends(folder, keys=keys, dim=dim, read_only=read_only, vectors=vectors)
    except BaseException:
        if lock_fd is not None:
            os.close(lock_fd)
        raise
    return Opened(folder, manifest, stores, keys, lock_fd, vectors)
