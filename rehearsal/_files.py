"""The one way rehearsal writes a file it reads back: a temporary file in the same folder, fsync it,
rename it over the old one, fsync the folder.

A reader (or a crash) sees either the old content or the new one, never a torn file. Every state file goes
through here: the memory's manifest and index snapshot, the audit log's head, the versions file, a run's
``state.json`` and ``results.json``, EWC and predictor state, adapter and gate manifests, a deployment's
files. ``atomic_writer`` is the file-object form (``torch.save`` writes into it); ``create_new`` is the
form for a file that must never be overwritten (a key, a receipt); ``replace_folder`` puts a folder
written beside its destination (a weights folder) in place. Files meant only for people (``results.md``,
plots, ``report.html``) are written plainly where they are made; ``tests/test_persistence.py`` holds the
list and fails on a new writer outside it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from rehearsal.errors import StoreFormatError

__all__ = [
    "OWNER_ONLY_DIR",
    "OWNER_ONLY_FILE",
    "atomic_write",
    "atomic_writer",
    "create_new",
    "create_private",
    "read_json",
    "remove_stale_temps",
    "replace_folder",
    "write_json",
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


def _fsync_folder(folder: Path) -> None:
    # The rename (or link) lives in the folder's entry table: without this a crash may forget it.
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _temp_for(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")  # the pattern remove_stale_temps knows


@contextlib.contextmanager
def atomic_writer(path: Path, *, mode: int = OWNER_ONLY_FILE) -> Iterator[IO[bytes]]:
    """A binary file whose content becomes ``path``'s, atomically and durably, when the block ends
    without an exception; on an exception ``path`` keeps its previous content."""
    tmp = _temp_for(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        os.fchmod(fd, mode)  # the umask only removes bits; this sets exactly these
        with open(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        # A failed write (a full disk) must not leave a half-written temp file behind; only a killed
        # process leaves one, and the next writer's open removes it (remove_stale_temps).
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def atomic_write(path: Path, *parts: bytes | memoryview) -> None:
    """Write ``parts`` back to back as the new content of ``path``, atomically and durably."""
    with atomic_writer(path) as f:
        for part in parts:
            f.write(part)  # parts, not one joined buffer: a large snapshot is not copied again


def write_json(path: Path, data: Any, *, indent: int = 2) -> None:
    """``data`` as JSON (keys sorted), replacing ``path`` atomically and durably."""
    atomic_write(path, (json.dumps(data, indent=indent, sort_keys=True) + "\n").encode("utf-8"))


def create_new(path: Path, data: bytes, *, mode: int = OWNER_ONLY_FILE) -> None:
    """Write ``data`` as a new file ``path``, complete or not at all; FileExistsError if ``path`` exists
    (it is never overwritten: a key file or a receipt). The complete temp file is linked into place,
    which fails rather than replaces."""
    tmp = _temp_for(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        os.fchmod(fd, mode)
        with open(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_folder(path.parent)


def replace_folder(written: Path, final: Path) -> None:
    """Put the complete folder ``written`` (a sibling of ``final``) in place of ``final``: its files and
    folders are fsynced first, so a crash after the rename cannot leave a folder of torn files; the previous
    ``final`` is moved aside before the rename and removed after it."""
    for item in [written, *sorted(written.rglob("*"))]:
        if not item.is_symlink():
            fd = os.open(item, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    aside = final.with_name(f".{final.name}.old-{os.getpid()}")
    shutil.rmtree(aside, ignore_errors=True)
    if final.exists():
        os.replace(final, aside)
    os.replace(written, final)
    _fsync_folder(final.parent)
    shutil.rmtree(aside, ignore_errors=True)


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
