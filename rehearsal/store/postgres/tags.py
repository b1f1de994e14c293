"""What a server row's tag covers, and how a selected row is turned into those values.

Format 2 tags a row's id, tenant, task, label, tags, extra, source and generation, the same eight values
as the embedded store. Format 3 adds a ninth, the SHA-256 of the row's vector as float32 in network byte
order: the vector is stored in the clear so that pgvector can search it, and without it in the tag a
vector swapped in from another row would steer a search with no signal. The server computes that digest
from the stored vector in the same statement that selects the row (``EMBEDDING_DIGEST``, pgvector's binary
form after its four-byte header), so a check never has to fetch the vectors themselves; the client computes
it from the bytes it inserts (:func:`vector_digest`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from rehearsal.store.types import EntryRow

__all__ = ["COLUMNS", "EMBEDDING_DIGEST", "MAC_AT", "VECTOR_AT", "entry_row", "tagged", "vector_digest"]

# pg_catalog's own sha256, named with its schema so that a function of that name made in the memory's
# schema is not the one called. vector_send writes int16 dim, int16 unused, then the floats big-endian.
EMBEDDING_DIGEST = "pg_catalog.sha256(substring(vector_send(embedding) FROM 5))"
COLUMNS = f"id, tenant, task, label_int, label_text, tags, extra, source, added_gen, mac, {EMBEDDING_DIGEST}"
MAC_AT = 9  # where the tag sits among COLUMNS
VECTOR_AT = 11  # where ``embedding`` sits in a SELECT of COLUMNS followed by it


def vector_digest(vector: bytes) -> str:
    """The digest a format-3 tag covers, of a vector given as native float32 bytes (hex)."""
    big_endian = np.frombuffer(vector, dtype=np.float32).astype(">f4").tobytes()
    return hashlib.sha256(big_endian).hexdigest()


def tagged(values: Sequence[Any], *, with_vector: bool) -> tuple[Any, ...]:
    """A selected row (``COLUMNS``) as the values its tag covers, the same as the embedded store's (the
    label one int or name; tags and extra as JSON text), then the vector's digest in format 3
    (``with_vector``), then the tag."""
    label_int, label_text, tags = values[3], values[4], values[5]
    # Both label columns set never comes from an insert: a tuple that no tag was made over.
    label = label_int if label_text is None else label_text if label_int is None else (label_int, label_text)
    tags_json = json.dumps(list(tags)) if isinstance(tags, list) else None
    mac = bytes(values[MAC_AT]) if isinstance(values[MAC_AT], bytes | memoryview) else values[MAC_AT]
    row = (values[0], values[1], values[2], label, tags_json, values[6], values[7], values[8])
    if not with_vector:
        return (*row, mac)
    digest = values[10]
    digest = bytes(digest).hex() if isinstance(digest, bytes | memoryview) else None
    return (*row, digest, mac)


def entry_row(values: Sequence[Any]) -> EntryRow:
    label = values[3] if values[3] is not None else values[4]
    return EntryRow(
        id=int(values[0]),
        tenant=values[1],
        task=values[2],
        label=label,
        tags=tuple(values[5]),
        extra=json.loads(values[6]),
        source=values[7],
    )
