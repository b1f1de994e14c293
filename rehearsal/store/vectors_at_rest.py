"""Vectors as a record store keeps them: rows of ``dtype`` bytes, sealed with the tenant's data key when the
store is encrypted (embeddings can be inverted back into text). Every vector index backend seals and opens
them the same way, so the record store can rebuild any of them.

The embedded catalog keeps float16 since format 2 (format 1 kept float32): half the bytes, and the index's
own fp16 codes already showed the rounding costs no recall. A server record store keeps float32 in the
clear (pgvector must compute with them). Every index searches the vectors as they rest, rounded and scaled
back to unit length (:func:`as_stored`), the writer that added them included, so a reopened memory answers
exactly as the handle that wrote it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rehearsal.errors import IntegrityError
from rehearsal.store.protocols import Sealer, VectorRow

__all__ = ["FLOAT16", "FLOAT32", "as_stored", "open_vector_rows", "reseal_rows", "seal_vectors"]

FLOAT16 = np.dtype(np.float16)  # the embedded catalog, format 2
FLOAT32 = np.dtype(np.float32)  # the embedded catalog's format 1; a server record store


def _unit(vectors: np.ndarray) -> np.ndarray:
    """float32 copies of ``vectors`` scaled back to unit length (after rounding)."""
    out = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return np.ascontiguousarray(out / np.where(norms > 0, norms, 1.0), dtype=np.float32)


def as_stored(vectors: np.ndarray, dtype: np.dtype = FLOAT16) -> np.ndarray:
    """(n, dim) float32 ``vectors`` as a handle reads them back after storing them as ``dtype``."""
    return _unit(np.asarray(vectors, dtype=np.float32).astype(dtype))


def seal_vectors(
    sealer: Sealer | None, tenant: str, ids: list[int], vectors: np.ndarray, *, dtype: np.dtype = FLOAT16
) -> list[bytes]:
    """The bytes to store for ``vectors`` (n, dim) float32 under ``ids``: rows of ``dtype``, sealed when
    ``sealer`` is given."""
    raw = [row.tobytes() for row in np.asarray(vectors, dtype=np.float32).astype(dtype)]
    if sealer is None:
        return raw
    return sealer.seal_many(tenant, ids, raw, purpose="vector")


def open_vector_rows(
    sealer: Sealer | None, rows: Sequence[VectorRow], dim: int, *, dtype: np.dtype = FLOAT16
) -> tuple[np.ndarray, np.ndarray]:
    """Record-store rows (id, tenant, blob) -> (ids (n,) int64, unit vectors (n, dim) float32), unsealing
    tenant by tenant; a blob of the wrong width is an IntegrityError."""
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros((0, dim), dtype=np.float32)
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    if sealer is None:
        blobs = [r[2] for r in rows]
    else:
        blobs = [b""] * len(rows)
        for tenant, positions in _by_tenant(rows).items():
            opened = sealer.open_sealed_many(
                tenant, [rows[p][0] for p in positions], [rows[p][2] for p in positions], purpose="vector"
            )
            for p, blob in zip(positions, opened, strict=True):
                blobs[p] = blob
    width = dim * dtype.itemsize
    for pos, blob in enumerate(blobs):
        if len(blob) != width:
            raise IntegrityError(f"vector of record {int(ids[pos])} has {len(blob)} bytes, expected {width}")
    vectors = np.frombuffer(b"".join(blobs), dtype=dtype).reshape(len(rows), dim)
    return ids, _unit(vectors)


def reseal_rows(
    sealer: Sealer | None, rows: Sequence[VectorRow], dim: int, *, source: np.dtype, target: np.dtype
) -> list[bytes]:
    """Rows stored as ``source`` (a format migration's input), sealed again as ``target``, in row order."""
    ids, vectors = open_vector_rows(sealer, rows, dim, dtype=source)
    out: list[bytes] = [b""] * len(rows)
    for tenant, positions in _by_tenant(rows).items():
        sealed = seal_vectors(
            sealer, tenant, [int(ids[p]) for p in positions], vectors[positions], dtype=target
        )
        for p, blob in zip(positions, sealed, strict=True):
            out[p] = blob
    return out


def _by_tenant(rows: Sequence[VectorRow]) -> dict[str, list[int]]:
    positions: dict[str, list[int]] = {}
    for pos, row in enumerate(rows):
        positions.setdefault(row[1], []).append(pos)
    return positions
