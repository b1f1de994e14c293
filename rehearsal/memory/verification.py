"""Whole-memory checks and statistics, over the stores a memory is made of (the facade holds the lock)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from rehearsal.errors import IntegrityError
from rehearsal.store.protocols import RecordStore, TextStore, VectorIndex
from rehearsal.store.registry import Backends

__all__ = ["memory_stats", "verify_memory"]


def verify_memory(
    records: RecordStore, texts: TextStore | None, vectors: VectorIndex, *, keyed: bool
) -> dict[str, int]:
    """Authenticate every text, vector and catalog row; check that the index, records and texts hold the
    same ids.

    Raises IntegrityError naming the first disagreement. Returns counts of what was checked, and
    ``metadata_keyed``: 1 when the rows' metadata is authenticated under the store's keys, 0 for a store
    made without keys, whose rows carry checksums only (they catch damage, not a deliberate edit). The
    caller holds one read transaction (a reader has caught up inside it), so a concurrent writer cannot
    make the stores look out of step. ``texts`` is None for an embedding-only memory.
    """
    # all_rows authenticates each row as it reads it (format 2).
    record_ids = {row.id for row in records.all_rows()}
    if len(record_ids) != records.count():
        raise IntegrityError(f"the catalog lists {len(record_ids)} rows but counts {records.count()}")
    checked = 0
    if texts is not None:
        checked = texts.verify()
        text_ids = set(texts.ids())
        if text_ids != record_ids:
            only_texts = sorted(text_ids - record_ids)[:5]
            only_records = sorted(record_ids - text_ids)[:5]
            raise IntegrityError(
                f"catalog and vault disagree: texts without entries {only_texts},"
                f" entries without texts {only_records}"
            )
    ids, stored = vectors.load_all()
    norms = np.linalg.norm(stored, axis=1) if len(stored) else np.zeros(0)
    bad = np.flatnonzero(~np.isfinite(norms) | (np.abs(norms - 1.0) > 1e-3))
    if len(bad):
        raise IntegrityError(f"vector of record {int(ids[bad[0]])} is not a finite unit vector")
    index_ids = set(vectors.ids().tolist())
    if index_ids != record_ids:
        stray = sorted(index_ids - record_ids)[:5]
        absent = sorted(record_ids - index_ids)[:5]
        raise IntegrityError(f"index and catalog disagree: stray ids {stray}, missing ids {absent}")
    return {
        "entries": len(record_ids),
        "texts": checked,
        "vectors": len(ids),
        "metadata": len(record_ids),
        "metadata_keyed": int(keyed),
        "generation": vectors.generation,
    }


def memory_stats(folder: Path | str, stores: Backends, *, manifest: dict[str, Any]) -> dict[str, Any]:
    """Counts, sizes and the index kind, with what the manifest says of the memory (encoder, width,
    mode). A server memory (``folder`` a URL without its password) has no files."""
    records, vectors = stores.records, stores.vectors
    files = (
        {p.name: p.stat().st_size for p in folder.iterdir() if p.is_file()}
        if isinstance(folder, Path)
        else {}
    )
    return {
        "path": str(folder),
        "entries": records.count(),
        "generation": vectors.generation,
        "encoder": str(manifest["encoder"]["name"]),
        "dim": int(manifest["encoder"]["dim"]),
        "embedding_only": bool(manifest["embedding_only"]),
        "encrypted": stores.keyed is not None,
        "index_spec": vectors.spec,
        "tenants": records.counts_by("tenant"),
        "tasks": records.counts_by("task"),
        "labels": len(records.counts_by("label")),
        # A server's tables are not this machine's files: their size is the server's to report.
        "disk_bytes": sum(files.values()) if isinstance(folder, Path) else None,
        "files": files,
    }
