"""The one write path of a memory: a durable transaction over the stores, then the index follows.

INVARIANT: records, texts and the policy state change together in one record-store transaction (with
full fsync); the vector index is told only after it committed, so it never holds what was not durable.
A batch of several tenants is still one transaction and one generation.
"""

from __future__ import annotations

from collections.abc import Mapping

from rehearsal.memory.batch import Batch
from rehearsal.store.registry import Backends

__all__ = ["commit"]


def commit(
    stores: Backends,
    batch: Batch | None,
    *,
    evict: list[int],
    state: Mapping[str, str] | None,
    store_texts: bool,
) -> list[int]:
    """Remove ``evict``, add ``batch`` and save ``state`` in one transaction; returns the new ids."""
    records, keyed = stores.records, stores.keyed
    ids: list[int] = []
    with records.transaction():
        gen = records.bump_generation()
        if evict:
            if keyed is not None and store_texts:
                keyed.delete(evict)
            records.remove(evict, generation=gen)
        if batch is not None:
            ids = records.allocate_ids(len(batch.vectors))
            if store_texts:
                # INVARIANT: a text-storing memory has keys, and its batches carry texts.
                assert keyed is not None
                assert batch.texts is not None
                keyed.put(ids, batch.texts, tenant=batch.tenants)
            # Each tenant's vectors are sealed under its own key; the rows then go in with one insert, so a
            # batch of many tenants costs what a batch of one does, bar the sealing.
            sealed: list[bytes] = [b""] * len(ids)
            for tenant, at in batch.by_tenant().items():
                part_ids = [ids[p] for p in at]
                for position, blob in zip(
                    at, stores.vectors.seal(tenant, part_ids, batch.vectors[at]), strict=True
                ):
                    sealed[position] = blob
            records.insert(
                ids,
                tenant=batch.tenants,
                metadata=batch.metadata,
                sources=batch.sources,
                generation=gen,
                vectors=sealed,
            )
        for key, value in (state or {}).items():
            records.set_meta(key, value)
    # Durable from here on; the in-process index follows.
    stores.vectors.applied(gen, evict, ids, batch.vectors if batch is not None else None)
    return ids
