"""The sealed row set of a server memory (format 3), and the move of a format-2 memory to it.

A row an administrator DELETEs leaves nothing behind to fail a tag; what notices it is the commit record,
which since format 3 covers, with the entry count, the sum modulo 2**256 of one keyed element per row
(:meth:`rehearsal.store.authenticity.CatalogAuthenticator.rowset_element`, of the row's tag). Every write
transaction shifts that sum by the elements of the rows it inserts and deletes, in the same transaction
(so a rolled-back savepoint takes its shift with it). A handle compares the table with it whenever the
memory's change counter has moved since it last looked (a statement trigger moves it on DELETE and
TRUNCATE too, see :mod:`rehearsal.store.postgres.schema`), not on every query: a recount reads every row's
id and tag, which is what a million-row memory cannot afford per query. After its own commit a writer need
not recount: when nobody moved the counter between its last look and its commit, the table is what it
looked at plus its own rows, and that is what it sealed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from rehearsal.errors import IntegrityError
from rehearsal.store.authenticity import ROWSET_MODULUS, CatalogAuthenticator
from rehearsal.store.postgres.connection import ServerConnection
from rehearsal.store.postgres.tags import COLUMNS, MAC_AT, tagged
from rehearsal.store.types import EntryRow

__all__ = ["EMPTY", "Tally", "check_rowset", "migrate_to_format3", "shifted"]

EMPTY = f"{0:064x}"  # the sum over no rows, as mem_meta keeps it


class ServerRecords(Protocol):
    """What of :class:`rehearsal.store.postgres.records.ServerRecords` the row set needs."""

    conn: ServerConnection
    auth: CatalogAuthenticator

    def transaction(self) -> AbstractContextManager[None]: ...
    def stream(self, query: str, params: Sequence[Any]) -> Iterator[Sequence[Any]]: ...
    def all_rows(self) -> Iterable[EntryRow]: ...
    def get_meta(self, key: str, default: str | None = None) -> str | None: ...
    def set_meta(self, key: str, value: str) -> None: ...
    def count(self) -> int: ...
    def mark_changed(self) -> None: ...


def shifted(rowset: str, delta: int) -> str:
    """``rowset`` (hex, as kept in mem_meta) moved by ``delta`` (elements added minus elements removed)."""
    return f"{(int(rowset, 16) + delta) % ROWSET_MODULUS:064x}"


class Tally:
    """The count and element sum of the rows passed through :meth:`passing`."""

    def __init__(self, auth: CatalogAuthenticator) -> None:
        self.auth = auth
        self.count = 0
        self.total = 0

    def passing(self, rows: Iterable[Sequence[Any]], *, mac_at: int = MAC_AT) -> Iterator[Sequence[Any]]:
        for row in rows:
            mac = row[mac_at]
            self.count += 1
            self.total += self.auth.rowset_element(bytes(mac) if isinstance(mac, memoryview) else mac)
            yield row


def check_rowset(records: ServerRecords, count: int, rowset: str, tally: Tally | None = None) -> None:
    """IntegrityError unless the table's rows are the ``count`` rows whose elements sum to ``rowset``;
    ``tally``: those of every row, when the caller has just read them all (else they are read here)."""
    if tally is None:
        tally = Tally(records.auth)
        for _ in tally.passing(records.stream("SELECT id, mac FROM entries", ()), mac_at=1):
            pass
    sums = f"{tally.total % ROWSET_MODULUS:064x}" == rowset
    if tally.count != count or not sums:
        # Name the row when one fails its own tag (edited, copied in, its tag swapped): a clearer message.
        for _ in records.all_rows():
            pass
    if tally.count != count:
        raise IntegrityError(
            f"the memory holds {tally.count} entries but its commit record says {count}: rows were deleted"
            " or added on the server"
        )
    if not sums:
        raise IntegrityError(
            "the memory's rows are not the row set its commit record seals: a row was deleted, replaced or"
            " added on the server"
        )


def migrate_to_format3(records: ServerRecords) -> None:
    """Re-tag every row of a format-2 memory over its vector too and seal its row set, in one transaction
    (a writer's open). Each row's format-2 tag is checked first, so nothing edited is re-tagged as genuine;
    a format-2 commit record over rows that are not all format 2 is refused."""
    with records.transaction():
        if records.get_meta("rowset") is not None:
            return  # another writer moved it first
        tally, pending = Tally(records.auth), []
        for values in records.stream(f"SELECT {COLUMNS} FROM entries", ()):
            old = tagged(values, with_vector=False)
            records.auth.check_row(old[:8], old[8])
            new = tagged(values, with_vector=True)
            pending.append((int(values[0]), records.auth.row_tag(new[:9])))
            if len(pending) >= 5_000:
                _retag(records, pending, tally)
        _retag(records, pending, tally)
        if tally.count != records.count():
            raise IntegrityError(
                f"the memory holds {tally.count} entries but its commit record says {records.count()}"
            )
        records.set_meta("rowset", f"{tally.total % ROWSET_MODULUS:064x}")
        records.set_meta("format", "3")
        records.mark_changed()


def _retag(records: ServerRecords, pending: list[tuple[int, bytes]], tally: Tally) -> None:
    if not pending:
        return
    for _ in tally.passing(pending, mac_at=1):
        pass
    records.conn.execute(
        "UPDATE entries SET mac = v.mac FROM unnest(%s::bigint[], %s::bytea[]) AS v(id, mac)"
        " WHERE entries.id = v.id",
        ([i for i, _ in pending], [m for _, m in pending]),
    )
    pending.clear()
