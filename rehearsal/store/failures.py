"""Where the disk and SQLite meet the library: their exceptions become ours.

A full disk surfaces as ``sqlite3.OperationalError`` ("database or disk is full") inside a transaction,
or as ``OSError(ENOSPC)`` from a snapshot or audit-head write; a database damaged on disk as
``sqlite3.DatabaseError``. Callers see :class:`StorageError` or :class:`IntegrityError` naming what was
being done, and the message carries no record text (SQLite's own messages name no values).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from rehearsal.errors import IntegrityError, RehearsalError, StorageError

__all__ = ["storage_errors"]


@contextmanager
def storage_errors(doing: str) -> Iterator[None]:
    """Re-raise the disk's and SQLite's errors inside the block as ours; ``doing`` says what failed."""
    try:
        yield
    except RehearsalError:
        raise
    except sqlite3.OperationalError as exc:
        if "decode" in str(exc):  # "Could not decode to UTF-8 column ...": altered text bytes
            raise IntegrityError(f"{doing} failed: the database holds damaged text ({exc})") from exc
        # Disk full, I/O error, a lock that outlived the busy timeout: the operation, not the data, failed.
        raise StorageError(f"{doing} failed: the database refused it ({exc})") from exc
    except sqlite3.DatabaseError as exc:
        raise IntegrityError(f"{doing} failed: the database is damaged ({exc})") from exc
    except UnicodeDecodeError as exc:
        raise IntegrityError(f"{doing} failed: stored text is not UTF-8 (damaged)") from exc
    except json.JSONDecodeError as exc:
        raise IntegrityError(f"{doing} failed: stored metadata is not JSON (damaged: {exc.msg})") from exc
    except OSError as exc:
        name = f" ({exc.filename})" if exc.filename else ""
        raise StorageError(f"{doing} failed: {exc.strerror or exc}{name}") from exc
