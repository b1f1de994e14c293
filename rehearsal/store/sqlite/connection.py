"""Small helpers for the SQLite connections that hold a memory's durable state."""

from __future__ import annotations

import os
import sqlite3
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from rehearsal.errors import StorageError, StoreFormatError

__all__ = ["chunked", "connect", "transaction"]

T = TypeVar("T")

# SQLite's default limit on bound parameters is 999 in older builds; stay under it.
MAX_PARAMS = 900


def connect(
    path: str | Path, *, read_only: bool = False, what: str = "database", page_size: int | None = None
) -> sqlite3.Connection:
    """Open a connection in autocommit mode (transactions are explicit) with WAL and full fsync.

    ``synchronous=FULL`` makes a committed transaction durable before COMMIT returns, which is what lets
    an add be acknowledged only once it would survive a crash. A file that is not SQLite is a
    StoreFormatError naming it as ``what`` ("database", "vault"), not a bare sqlite3 error. ``page_size``
    applies to a database not yet written only.
    """
    if read_only:
        # Quoted: a folder name with '?', '#' or '%' would otherwise be read as part of the URI.
        uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, timeout=30.0)
    else:
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30.0)
    try:
        if page_size is not None:
            # Only a database not yet written takes it (before WAL mode, which fixes the page size).
            conn.execute(f"PRAGMA page_size={int(page_size)}")
        if not read_only:
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA secure_delete=ON")
    except sqlite3.OperationalError as exc:
        conn.close()
        if "disk I/O error" in str(exc) or "disk is full" in str(exc):
            # Opening writes the WAL index: with no space left it fails here, and that is not damage.
            raise StorageError(f"cannot open {str(path)!r}: {exc} (is the disk full?)") from exc
        raise StoreFormatError(f"{str(path)!r} is not a readable SQLite {what}: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StoreFormatError(f"{str(path)!r} is not a readable SQLite {what}: {exc}") from exc
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception; joins a transaction already open."""
    if conn.in_transaction:
        yield
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        # SQLite rolls back by itself on some errors (SQLITE_FULL, SQLITE_IOERR); a second ROLLBACK would
        # then fail and hide the error that mattered ("database or disk is full").
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def chunked(items: Sequence[T], size: int = MAX_PARAMS) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
