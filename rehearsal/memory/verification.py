"""Whole-memory checks and statistics (kept apart from the facade, which they only read)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from rehearsal.errors import IntegrityError

if TYPE_CHECKING:
    from rehearsal.memory import RehearsalMemory

__all__ = ["memory_stats", "verify_memory"]


def verify_memory(memory: RehearsalMemory) -> dict[str, int]:
    """Authenticate every text and vector; check that index, catalog and vault hold the same ids.

    Raises IntegrityError naming the first disagreement. Returns counts of what was checked. The caller
    holds one read transaction (a reader has caught up inside it), so a concurrent writer cannot make
    the catalog, vault and index look out of step.
    """
    catalog_ids = set(memory._catalog.matching_ids(None))
    texts = 0
    vault = memory._vault
    if vault is not None and not memory.embedding_only:
        texts = vault.verify()
        vault_ids = set(vault.ids())
        if vault_ids != catalog_ids:
            only_vault = sorted(vault_ids - catalog_ids)[:5]
            only_catalog = sorted(catalog_ids - vault_ids)[:5]
            raise IntegrityError(
                f"catalog and vault disagree: texts without entries {only_vault},"
                f" entries without texts {only_catalog}"
            )
    ids, vectors = memory._vectors.load_all()
    norms = np.linalg.norm(vectors, axis=1) if len(vectors) else np.zeros(0)
    bad = np.flatnonzero(~np.isfinite(norms) | (np.abs(norms - 1.0) > 1e-3))
    if len(bad):
        raise IntegrityError(f"vector of record {int(ids[bad[0]])} is not a finite unit vector")
    index_ids = set(memory._vectors.index.ids().tolist())
    if index_ids != catalog_ids:
        stray = sorted(index_ids - catalog_ids)[:5]
        absent = sorted(catalog_ids - index_ids)[:5]
        raise IntegrityError(f"index and catalog disagree: stray ids {stray}, missing ids {absent}")
    return {"entries": len(catalog_ids), "texts": texts, "vectors": len(ids), "generation": memory.generation}


def memory_stats(memory: RehearsalMemory) -> dict[str, Any]:
    catalog = memory._catalog
    files = {p.name: p.stat().st_size for p in memory.path.iterdir() if p.is_file()}
    return {
        "path": str(memory.path),
        "entries": catalog.count(),
        "generation": memory.generation,
        "encoder": memory.encoder_name,
        "dim": memory.dim,
        "embedding_only": memory.embedding_only,
        "encrypted": memory._vault is not None,
        "index_spec": memory._vectors.index.spec,
        "tenants": catalog.counts_by("tenant"),
        "tasks": catalog.counts_by("task"),
        "labels": len(catalog.counts_by("label")),
        "disk_bytes": sum(files.values()),
        "files": files,
    }
