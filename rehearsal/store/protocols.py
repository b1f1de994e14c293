"""The four storage roles a memory is made of, as small protocols; each backend implements them.

    RecordStore   the source of truth: ids, metadata, sealed vectors, generations, transactions, changes
    TextStore     the texts, sealed per tenant: put / get / delete / shred a tenant / rotate the master key
    Sealer        AEAD sealing of a payload bound to (tenant, record id, purpose)
    VectorIndex   derived and rebuildable: follows the record store generation by generation

INVARIANT: the record store decides what exists. A text store holds a text for exactly the ids the record
store holds (unless the memory is embedding-only), and the vector index can always be rebuilt from the
record store's sealed vectors. Every mutation bumps the record store's generation inside one transaction;
the vector index is told afterwards (``applied``) and a reader catches up from ``changes_since``.

What a record store reads back it authenticates (the embedded backend since format 2, see
``rehearsal.store.authenticity``): a row whose metadata was altered is an IntegrityError wherever the row is
read or selected by its metadata, and a store that lost committed transactions refuses to open.

Filters reach a backend as a :class:`~rehearsal.store.where.Where` tree (built by ``parse_where``), which
each backend compiles to its own query language.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol, runtime_checkable

import numpy as np

from rehearsal.crypto.keys import KeyRing
from rehearsal.store.types import EntryRow
from rehearsal.store.where import Where

__all__ = [
    "ERASE_META_KEY",
    "FilteringIndex",
    "KeyedStore",
    "RecordStore",
    "Sealer",
    "TextStore",
    "VectorIndex",
    "VectorRow",
]

ERASE_META_KEY = "erase_generation"
"""Meta key a forget sets to its generation inside its transaction: a vector index whose persisted copy
predates it may still hold the forgotten vectors, and the next open (of any kind) rewrites that copy."""

VectorRow = tuple[int, str, bytes]
"""(id, tenant, sealed vector) as the record store keeps it."""


class RecordStore(Protocol):
    """Ids, metadata and sealed vectors of every entry, with the generation of each change."""

    def transaction(self) -> AbstractContextManager[None]:
        """A durable write transaction: all of it commits (fsynced) or none of it does."""
        ...

    def read_view(self) -> AbstractContextManager[None]:
        """A consistent read snapshot across several calls (a reader's catch-up and lookups)."""
        ...

    @property
    def generation(self) -> int: ...

    def bump_generation(self) -> int: ...

    def get_meta(self, key: str, default: str | None = None) -> str | None: ...

    def set_meta(self, key: str, value: str) -> None: ...

    def allocate_ids(self, n: int) -> list[int]: ...

    def insert(
        self,
        ids: Sequence[int],
        *,
        tenant: str | Sequence[str],  # one owner for all, or one per id
        metadata: Sequence[Mapping[str, Any]],
        sources: Sequence[str | None],
        vectors: Sequence[bytes],
        generation: int,
    ) -> None: ...

    def remove(self, ids: Sequence[int], *, generation: int) -> None: ...

    def existing(self, ids: Iterable[int]) -> set[int]: ...

    def rows(self, ids: Sequence[int]) -> dict[int, EntryRow]: ...

    def all_rows(self) -> Iterable[EntryRow]: ...

    def vectors(self, *, min_gen_exclusive: int = -1) -> Iterable[VectorRow]:
        """Sealed vectors of the entries added after a generation, in id order."""
        ...

    def vectors_of(self, ids: Sequence[int]) -> list[VectorRow]: ...

    def changes_since(self, generation: int) -> tuple[list[int], list[int]]:
        """(ids added after ``generation`` and still present, ids removed after it), both ascending."""
        ...

    def removed_since(self, generation: int) -> list[int]: ...

    def added_count_since(self, generation: int) -> int: ...

    def matching_ids(self, where: Where | None, *, max_gen: int | None = None) -> list[int]: ...

    def group_ids(self, column: str, where: Where | None, *, max_gen: int) -> dict[Any, list[int]]: ...

    def ids_of_tenant(self, tenant: str) -> list[int]: ...

    def ids_by_key(self, field: str, values: Sequence[Any], *, tenant: str) -> list[int]:
        """Ids of the tenant's entries whose extra metadata ``field`` equals one of ``values``."""
        ...

    def count(self) -> int: ...

    def counts_by(self, column: str) -> dict[str, int]: ...

    def compact(self) -> None:
        """Make removed bytes leave the disk now (e.g. after a tenant is forgotten)."""
        ...

    def close(self) -> None: ...


class TextStore(Protocol):
    """The texts of the entries, each sealed under its tenant's data key."""

    def put(self, ids: Sequence[int], texts: Sequence[str], *, tenant: str | Sequence[str]) -> None:
        """Seal and store new texts; ``tenant`` names one owner for all, or one per id."""
        ...

    def get(self, ids: Sequence[int]) -> list[str]: ...

    def get_present(self, ids: Sequence[int]) -> dict[int, str]: ...

    def delete(self, ids: Sequence[int]) -> int: ...

    def shred(self, tenant: str) -> int:
        """Destroy the tenant's data key and its texts."""
        ...

    def rotate_master_key(self, new_keys: KeyRing) -> None: ...

    def tenants(self) -> list[str]: ...

    def ids(self) -> list[int]: ...

    def verify(self) -> int: ...


class Sealer(Protocol):
    """Seals payloads under a tenant's data key, bound to (tenant, id, purpose)."""

    def seal(self, tenant: str, record_id: int, payload: bytes, *, purpose: str) -> bytes: ...

    def seal_many(
        self, tenant: str, ids: Sequence[int], payloads: Sequence[bytes], *, purpose: str
    ) -> list[bytes]: ...

    def open_sealed(
        self, tenant: str, record_id: int, blob: bytes | memoryview, *, purpose: str
    ) -> bytes: ...

    def open_sealed_many(
        self, tenant: str, ids: Sequence[int], blobs: Sequence[bytes], *, purpose: str
    ) -> list[bytes]: ...


class KeyedStore(TextStore, Sealer, Protocol):
    """A text store that also seals for the other stores, with the same per-tenant data keys, so that
    forgetting a tenant (``shred``) makes its texts and its sealed vectors unreadable at once."""

    @property
    def store_id(self) -> bytes:
        """The store's identity, bound into every record's associated data and checked against the
        master key when the store opens (so it cannot be edited without the key)."""
        ...


class VectorIndex(Protocol):
    """A searchable copy of the record store's vectors, derived and rebuildable, at a known generation."""

    @property
    def generation(self) -> int:
        """The last committed mutation the index reflects."""
        ...

    @property
    def spec(self) -> str:
        """What kind of index this is, for people (e.g. ``"IDMap,Flat"``, ``"IVF256,Flat"``)."""
        ...

    @property
    def nprobe(self) -> int:
        """Partitions probed per query; 0 for an exhaustive index."""
        ...

    def __len__(self) -> int: ...

    def seal(self, tenant: str, ids: list[int], vectors: np.ndarray) -> list[bytes]:
        """The bytes the record store keeps for ``vectors`` (n, dim) float32: sealed when encrypted."""
        ...

    def unseal(self, rows: list[VectorRow]) -> tuple[np.ndarray, np.ndarray]:
        """The inverse of :meth:`seal` for record-store rows: (ids (n,), unit vectors (n, dim) float32),
        authenticated (IntegrityError for a row that fails)."""
        ...

    def load(self) -> None:
        """Load the last snapshot and replay the record store's changes after it."""
        ...

    def catch_up(self) -> None:
        """Apply the record store's changes committed since ``generation``."""
        ...

    def applied(self, generation: int, evict: list[int], ids: list[int], vectors: np.ndarray | None) -> None:
        """Follow a commit that is already durable."""
        ...

    def drop(self, ids: Sequence[int]) -> None:
        """Stop returning ``ids`` from this handle (a reader whose records were erased upstream)."""
        ...

    def rebuild_if_outgrown(self) -> bool: ...

    def holds_erased(self) -> bool:
        """Whether the index's persisted copy (a snapshot file, a collection) predates the last forget and so
        may still hold an erased vector: a writer's open rewrites such a copy first."""
        ...

    def checkpoint(self, *, force: bool = False) -> None:
        """Persist the index at its generation when it moved since the last snapshot (always if forced)."""
        ...

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        allowed_ids: np.ndarray | None = None,
        threads: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(n, dim) queries -> (scores (n, k) float32, ids (n, k) int64, -1 padded); ``threads`` bounds the
        backend's own thread pool for this call (None: its default)."""
        ...

    def ids(self) -> np.ndarray: ...

    def load_all(self) -> tuple[np.ndarray, np.ndarray]:
        """Every stored vector from the record store, authenticated: (ids (n,), vectors (n, dim))."""
        ...

    def close(self) -> None:
        """Release the index's own connections (the record store is closed by its owner)."""
        ...


@runtime_checkable
class FilteringIndex(Protocol):
    """A vector index that applies a where-filter itself, in the same query as the search (a server's),
    instead of taking the list of allowed ids the record store computed."""

    def search_where(
        self, queries: np.ndarray, k: int, where: Where | None, *, threads: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """As ``VectorIndex.search``, restricted to the entries ``where`` admits."""
        ...
