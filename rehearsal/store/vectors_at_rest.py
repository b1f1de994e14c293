"""Vectors as the record store keeps them: raw float32 bytes, sealed with the tenant's data key when the
store is encrypted (embeddings can be inverted back into text). Every vector index backend seals and
opens them the same way, so the record store can rebuild any of them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rehearsal.errors import IntegrityError
from rehearsal.store.protocols import Sealer, VectorRow

__all__ = ["open_vector_rows", "seal_vectors"]


def seal_vectors(sealer: Sealer | None, tenant: str, ids: list[int], vectors: np.ndarray) -> list[bytes]:
    """The bytes to store for ``vectors`` (n, dim) float32 under ``ids``: sealed when ``sealer`` is given."""
    raw = [row.tobytes() for row in vectors]
    if sealer is None:
        return raw
    return sealer.seal_many(tenant, ids, raw, purpose="vector")


def open_vector_rows(
    sealer: Sealer | None, rows: Sequence[VectorRow], dim: int
) -> tuple[np.ndarray, np.ndarray]:
    """Record-store rows (id, tenant, blob) -> (ids (n,) int64, vectors (n, dim) float32), unsealing tenant
    by tenant; a blob of the wrong width is an IntegrityError."""
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros((0, dim), dtype=np.float32)
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    if sealer is None:
        blobs = [r[2] for r in rows]
    else:
        blobs = [b""] * len(rows)
        by_tenant: dict[str, list[int]] = {}
        for pos, row in enumerate(rows):
            by_tenant.setdefault(row[1], []).append(pos)
        for tenant, positions in by_tenant.items():
            opened = sealer.open_sealed_many(
                tenant, [rows[p][0] for p in positions], [rows[p][2] for p in positions], purpose="vector"
            )
            for p, blob in zip(positions, opened, strict=True):
                blobs[p] = blob
    width = dim * 4
    for pos, blob in enumerate(blobs):
        if len(blob) != width:
            raise IntegrityError(f"vector of record {int(ids[pos])} has {len(blob)} bytes, expected {width}")
    vectors = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(rows), dim)
    return ids, vectors
