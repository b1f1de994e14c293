"""What makes a catalog's rows and its committed state checkable (format 2): row MACs and commit records.

Every catalog row carries a 16-byte tag over its id, tenant, task, label, tags, extra metadata, source and
the generation that added it, bound to the store's identity; the committed state (generation, number of
entries, next id, the manifest) carries one more. In a store with keys the tags are keyed BLAKE2b (a MAC by
design, and a third of HMAC-SHA256's cost per row here) under a key derived from the store's internal data
key, so nobody without the master key can make a row or a commit record that passes. A store made without
keys has nothing secret to key them with: its tags are plain BLAKE2b checksums, which catch a damaged disk
but not a deliberate edit (``keyed`` says which).

A row is encoded for its tag as ``ascii()`` of the tuple of its values (ints, strs, None): unambiguous
(2 and '2' differ, quotes are escaped), four times cheaper than JSON, and independent of the Unicode
database of the Python that wrote it, since everything outside ASCII is escaped.

A server memory of format 3 tags a ninth value, the digest of the row's vector (kept in the clear there, for
the server to search), under another personalisation, so a format-2 tag never passes for a format-3 row.
It also seals its row set: the sum modulo 2**256 of one keyed element per row (:meth:`rowset_element`),
kept with the entry count in its commit record. A sum, not an XOR: a row missing from the table and the
same row counted as removed must not cancel out; and keyed elements, so that nobody without the key can
look for other rows whose elements add up to the same sum.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Sequence
from typing import Any

from rehearsal.errors import IntegrityError

__all__ = ["MAC_BYTES", "ROWSET_MODULUS", "CatalogAuthenticator"]

MAC_BYTES = 16
ROWSET_MODULUS = 2**256
_VECTOR_ROW_VALUES = 9  # the eight catalog values, then the vector's digest (format 3 of a server memory)


class CatalogAuthenticator:
    """Tags for rows and commit records of one store: keyed (HMAC) when ``key`` is given, else checksums."""

    __slots__ = ("_key", "_row_hasher", "_rowset_hasher", "_store_id", "_vector_row_hasher")

    def __init__(self, key: bytes | None, store_id: bytes) -> None:
        self._key = key
        self._store_id = store_id
        # Keyed and fed the store id once; each row's tag starts from a copy (catalog scans tag every row).
        self._row_hasher = hashlib.blake2b(digest_size=MAC_BYTES, key=key or b"", person=b"row")
        self._row_hasher.update(store_id)
        self._vector_row_hasher = hashlib.blake2b(digest_size=MAC_BYTES, key=key or b"", person=b"row+vector")
        self._vector_row_hasher.update(store_id)
        self._rowset_hasher = hashlib.blake2b(digest_size=32, key=key or b"", person=b"rowset")
        self._rowset_hasher.update(store_id)

    @property
    def keyed(self) -> bool:
        """Whether the tags authenticate (need the master key to forge) or only checksum."""
        return self._key is not None

    def __repr__(self) -> str:
        return f"CatalogAuthenticator(keyed={self.keyed}, key=<redacted>)"

    def tag(self, kind: bytes, payload: bytes) -> bytes:
        """A 16-byte tag of ``payload`` for ``kind`` (at most 16 bytes: BLAKE2b's personalisation)."""
        return hashlib.blake2b(
            self._store_id + payload, digest_size=MAC_BYTES, key=self._key or b"", person=kind
        ).digest()

    def row_tag(self, values: Sequence[Any]) -> bytes:
        """The tag of a row given as (id, tenant, task, label, tags JSON, extra JSON, source, added_gen),
        the same as ``tag(b"row", ascii(tuple(values)).encode())``; or given as those and the digest of
        its vector (format 3 of a server memory), tagged under ``b"row+vector"``."""
        base = self._vector_row_hasher if len(values) == _VECTOR_ROW_VALUES else self._row_hasher
        hasher = base.copy()
        hasher.update(ascii(tuple(values)).encode())
        return hasher.digest()

    def check_rows(self, rows: Iterable[Sequence[Any]], *, values: int = 8) -> int:
        """:meth:`check_row` for rows given as (``values`` values..., tag) -> how many were checked."""
        base = self._vector_row_hasher if values == _VECTOR_ROW_VALUES else self._row_hasher
        count = 0
        for row in rows:
            hasher = base.copy()
            hasher.update(ascii(tuple(row[:values])).encode())
            if hasher.digest() != row[values]:
                self.check_row(row[:values], row[values])  # names the row (and compares in constant time)
            count += 1
        return count

    def check_row(self, values: Sequence[Any], tag: object) -> None:
        """IntegrityError naming the row unless ``tag`` is the tag of ``values``."""
        if not isinstance(tag, bytes) or not hmac.compare_digest(self.row_tag(values), tag):
            covered = "metadata (tenant, task, label, tags, extra, source or generation)"
            if len(values) == _VECTOR_ROW_VALUES:
                covered = "metadata or vector"
            raise IntegrityError(
                f"catalog row {values[0]} fails authentication: its {covered} was altered, or the row was"
                " moved from another store"
            )

    def rowset_element(self, tag: bytes) -> int:
        """The keyed element a row adds to its store's row-set sum (of its tag, which covers the row)."""
        hasher = self._rowset_hasher.copy()
        hasher.update(tag)
        return int.from_bytes(hasher.digest(), "big")

    def commit_tag(
        self, generation: int, count: int, next_id: int, manifest: str, rowset: str | None = None
    ) -> str:
        """The commit record's tag; ``rowset`` (a server memory's row-set sum, hex) is covered when given."""
        fields: list[Any] = [generation, count, next_id, manifest]
        if rowset is not None:
            fields.append(rowset)
        payload = json.dumps(fields, separators=(",", ":")).encode()
        return self.tag(b"commit", payload).hex()

    def head_tag(self, generation: int, count: int) -> bytes:
        return self.tag(b"head", generation.to_bytes(8, "big") + count.to_bytes(8, "big"))
