"""Making, opening and closing a memory's folder: the manifest, the writer lock and the stores, in a safe
order; and the encoder a handle embeds with.

A new memory's manifest is written last (by the facade, once its handle exists): a folder without one is
"not a memory", so a crash in the middle of creating one is obvious rather than half-readable. A memory on
a server (a ``postgresql://`` URL) is created in one transaction with its manifest, and has no folder and
no writer lock: the server serialises its writers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rehearsal._files import OWNER_ONLY_DIR, remove_stale_temps
from rehearsal.crypto.keys import KeyRing
from rehearsal.embedding import Encoder, default_encoder_named
from rehearsal.errors import ConfigError, EncoderMismatchError, MissingKeyError
from rehearsal.store.failures import storage_errors
from rehearsal.store.layout import (
    acquire_writer_lock,
    check_new_folder,
    new_manifest,
    read_manifest,
    write_manifest,
)
from rehearsal.store.registry import (
    Backends,
    create_backends,
    create_server_backends,
    folder_of,
    is_server,
    open_backends,
    open_server_backends,
    server_display,
    server_manifest,
)

__all__ = ["Opened", "close_parts", "create_parts", "finish_create", "memory_encoder", "open_parts"]


@dataclass
class Opened:
    """What a memory handle is built from."""

    folder: Path | None  # None for a memory on a server
    manifest: dict[str, Any]
    stores: Backends
    keys: KeyRing | None
    lock_fd: int | None  # the writer lock (None for a reader, and on a server)
    location: str = ""  # what the memory was opened from: a folder, or a server URL (password included)
    vectors: str | None = None  # the vector server given at opening (None: the one recorded, or the default)

    @property
    def display(self) -> str:
        """The location for people: the folder, or the server URL without its password."""
        return str(self.folder) if self.folder is not None else server_display(self.location)


def create_parts(
    location: str | os.PathLike[str],
    *,
    keys: KeyRing | None,
    embedding_only: bool,
    identity: tuple[str, int],
    vectors: str | None = None,
) -> Opened:
    """Empty stores in a new or empty folder, with the writer lock held; the manifest is not written yet."""
    if not embedding_only and keys is None:
        raise MissingKeyError("a memory that stores text needs keys (KeyRing); or pass embedding_only=True")
    if is_server(location):
        url = os.fspath(location)
        manifest = new_manifest(embedding_only=embedding_only, encrypted=keys is not None, encoder=identity)
        stores = create_server_backends(url, keys=keys, dim=identity[1], manifest=manifest, vectors=vectors)
        return Opened(None, manifest, stores, keys, None, url, vectors)
    folder = folder_of(location)
    check_new_folder(folder)
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, OWNER_ONLY_DIR)  # the memory's own folder, whatever the umask (its parents keep theirs)
    manifest = new_manifest(embedding_only=embedding_only, encrypted=keys is not None, encoder=identity)
    stores = create_backends(folder, keys=keys, dim=identity[1], vectors=vectors, manifest=manifest)
    return Opened(folder, manifest, stores, keys, acquire_writer_lock(folder), os.fspath(location), vectors)


def finish_create(opened: Opened) -> None:
    if opened.folder is not None:  # a server memory's manifest was stored with its tables
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
    with storage_errors(f"opening the memory at {os.fspath(location)!r}"):
        if is_server(location):
            url = os.fspath(location)
            return _open_server(
                url, keys=keys, read_only=read_only, encoder_name=encoder_name, vectors=vectors
            )
        return _open_folder(
            location, keys=keys, read_only=read_only, encoder_name=encoder_name, vectors=vectors
        )


def _open_folder(
    location: str | os.PathLike[str],
    *,
    keys: KeyRing | None,
    read_only: bool,
    encoder_name: str | None,
    vectors: str | None,
) -> Opened:
    folder = folder_of(location)
    manifest = read_manifest(folder, encoder_name)
    keys = _keys_for(manifest, keys, str(folder))
    lock_fd = None if read_only else acquire_writer_lock(folder)
    try:
        if lock_fd is not None:
            remove_stale_temps(folder)
        dim = int(manifest["encoder"]["dim"])
        stores = open_backends(
            folder, keys=keys, dim=dim, read_only=read_only, vectors=vectors, manifest=manifest
        )
    except BaseException:
        if lock_fd is not None:
            os.close(lock_fd)
        raise
    return Opened(folder, manifest, stores, keys, lock_fd, os.fspath(location), vectors)


def close_parts(stores: Backends, lock_fd: int | None, *, write_snapshot: bool) -> None:
    """Write the index snapshot if asked, then close the stores and release the writer lock.

    The connection and the writer lock are released even when the last snapshot fails (a full disk):
    the record store holds every acknowledged record, the snapshot only spares the next open a replay.
    """
    try:
        if write_snapshot:
            with storage_errors("writing the index snapshot at close"):
                stores.vectors.checkpoint()
    finally:
        try:
            stores.close()
        finally:
            if lock_fd is not None:
                os.close(lock_fd)


def memory_encoder(encoder: Encoder | None, name: str, dim: int) -> Encoder:
    """``encoder``, or the packaged default loaded when the memory was built with it; checked for width."""
    if encoder is None:
        # The packaged model in the arithmetic the memory recorded (fp32, or bf16 after a "+bf16").
        encoder = default_encoder_named(name)
        if encoder is None:
            raise ConfigError(f"memory uses encoder {name!r}; pass encoder= to open()/create()")
    if encoder.dim != dim:
        raise EncoderMismatchError(f"encoder width {encoder.dim} != memory width {dim}")
    return encoder


def _keys_for(manifest: dict[str, Any], keys: KeyRing | None, where: str) -> KeyRing | None:
    if manifest["encrypted"] and keys is None:
        raise MissingKeyError(f"memory at {where!r} is encrypted; pass keys=KeyRing...")
    # A key in the environment must not stop anyone opening an unencrypted embedding-only memory.
    return keys if manifest["encrypted"] else None


def _open_server(
    url: str, *, keys: KeyRing | None, read_only: bool, encoder_name: str | None, vectors: str | None
) -> Opened:
    manifest = server_manifest(url)
    recorded = manifest["encoder"]["name"]
    if encoder_name is not None and encoder_name != recorded:
        raise EncoderMismatchError(f"memory was built with encoder {recorded!r}, got {encoder_name!r}")
    keys = _keys_for(manifest, keys, server_display(url))
    dim = int(manifest["encoder"]["dim"])
    stores = open_server_backends(
        url, keys=keys, dim=dim, read_only=read_only, vectors=vectors, manifest=manifest
    )
    return Opened(None, manifest, stores, keys, None, url, vectors)
