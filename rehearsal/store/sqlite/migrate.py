"""Format 1 -> 2 of the embedded catalog, in one transaction on the writer's first open.

Format 2 tags every row (:mod:`rehearsal.store.authenticity`), keeps a copy of the manifest and a commit
record in ``mem_meta``, and stores vectors as float16. The head file is made first, at the generation the
database already has: a migration cut short leaves a format-1 catalog beside a valid head, and the next
writer's open migrates again.
"""

from __future__ import annotations

from collections.abc import Callable

from rehearsal.store.sqlite.records import FORMAT, SqliteRecords

__all__ = ["migrate_v1"]

_BATCH = 5_000

Reseal = Callable[[list[tuple[int, str, bytes]]], list[bytes]]


def migrate_v1(records: SqliteRecords, reseal: Reseal, manifest: str) -> None:
    """Tag every row, re-store its vector through ``reseal`` and record the manifest copy and commit."""
    conn = records.conn
    if records.head is not None:
        records.head.create(records.generation, records.count(), None)  # format 1: no nonce yet
    with records.transaction():
        columns = {row[1] for row in conn.execute("PRAGMA table_info(entries)")}
        if "mac" not in columns:
            conn.execute("ALTER TABLE entries ADD COLUMN mac BLOB")
        last = -1
        while True:
            batch = conn.execute(
                "SELECT id, tenant, task, label, tags, extra, source, added_gen, vector FROM entries"
                " WHERE id > ? ORDER BY id LIMIT ?",
                (last, _BATCH),
            ).fetchall()
            if not batch:
                break
            vectors = reseal([(row[0], row[1], row[8]) for row in batch])
            conn.executemany(
                "UPDATE entries SET vector = ?, mac = ? WHERE id = ?",
                [
                    (vector, records.auth.row_tag(row[:8]), row[0])
                    for row, vector in zip(batch, vectors, strict=True)
                ],
            )
            last = batch[-1][0]
        records.set_meta("count", str(records.count()))
        records.set_meta("format", str(FORMAT))
        records.set_meta("manifest", manifest)
        records.mark_changed()
