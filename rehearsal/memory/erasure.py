"""Forgetting a tenant: the one mutation that must rewrite the index snapshot before it returns.

INVARIANT: once ``forget_tenant`` returns, no file of the memory holds the tenant's rows, vectors or a key
that opens its texts: the data key is destroyed in the transaction that removes the rows, and the snapshot
that still held the vectors is replaced at once. A forget killed in between leaves a mark in the record
store, and the next open finishes the job. The facade holds the lock and checks the handle is writable.
"""

from __future__ import annotations

from rehearsal.errors import NotFoundError
from rehearsal.store.failures import storage_errors
from rehearsal.store.protocols import ERASE_META_KEY
from rehearsal.store.registry import Backends

__all__ = ["forget_tenant"]


def forget_tenant(stores: Backends, name: str) -> int:
    """Erase tenant ``name`` (validated) from ``stores``; returns how many entries it had."""
    records, keyed = stores.records, stores.keyed
    ids = records.ids_of_tenant(name)
    known = keyed is not None and name in keyed.tenants()
    if not ids and not known:
        raise NotFoundError(f"no tenant {name!r} in this memory")
    with storage_errors(f"forgetting tenant {name!r}"):
        with records.transaction():
            gen = records.bump_generation()
            records.remove(ids, generation=gen)
            # Until the snapshot below replaces the old one, it holds the tenant's vectors: a
            # forget killed before that leaves the mark for the next open to finish the job.
            records.set_meta(ERASE_META_KEY, str(gen))
            if keyed is not None and known:
                keyed.shred(name)
        stores.vectors.applied(gen, ids, [], None)
        # The old snapshot still holds the tenant's vectors: replace it now, not at close.
        stores.vectors.checkpoint(force=True)
        records.compact()
    return len(ids)
