"""RehearsalMemory: an encoder and the store protocols (records, texts, sealing, vector index) behind one
durable facade; ``rehearsal.store.registry`` opens the backends (the embedded default: SQLite + FAISS).

On disk a memory is one folder (``indexes/README.md``): SQLite (WAL) is the source of truth, the FAISS
file a snapshot at a known generation (sealed when encrypted). An add returns once its transaction
committed with full fsync; the snapshot is rewritten on ``checkpoint()``/``close()``, after a rebuild, or
once the delta outgrows it; opening replays the delta from SQLite.

A memory can also live on a PostgreSQL server with pgvector (``create``/``open`` a ``postgresql://`` URL):
the same calls, records, sealed texts and vectors in one schema, no folder and no writer lock.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np

from rehearsal.crypto.keys import KeyRing, validate_tenant
from rehearsal.embedding import Encoder, encoder_identity
from rehearsal.errors import CleanupError, ConfigError, NotFoundError, ReadOnlyError, ValidationError
from rehearsal.memory.admission import admit_batch, check_present, replaced_ids
from rehearsal.memory.anchor import anchored
from rehearsal.memory.batch import Batch, check_group_by, check_ids, check_search, check_texts, prepare_batch
from rehearsal.memory.bench import bench_memory
from rehearsal.memory.commit import commit
from rehearsal.memory.erasure import forget_tenant
from rehearsal.memory.opening import (
    Opened,
    close_parts,
    create_parts,
    finish_create,
    memory_encoder,
    open_parts,
)
from rehearsal.memory.policies import AdmissionPolicy
from rehearsal.memory.searching import Resolver, Searcher, read_view, resolve_texts, vault_texts
from rehearsal.memory.verification import memory_stats, verify_memory
from rehearsal.store.failures import storage_errors
from rehearsal.store.layout import FORMAT_VERSION
from rehearsal.store.types import EntryRow, Hit
from rehearsal.store.where import parse_where

__all__ = ["FORMAT_VERSION", "Hit", "RehearsalMemory", "Resolver"]


class RehearsalMemory:
    """Past training examples: searchable vectors, metadata and (encrypted) text. Use ``create``/``open``."""

    def __init__(
        self,
        opened: Opened,
        *,
        read_only: bool,
        encoder: Encoder | None,
        resolver: Resolver | None,
    ) -> None:
        """Use :meth:`create` or :meth:`open`."""
        # The folder, or for a server memory its URL without the password (``_location`` keeps it).
        self.path: Path | str = opened.folder if opened.folder is not None else opened.display
        self._location = opened.location
        self._keys = opened.keys  # kept so that readers (DataLoader workers) can open the memory by path
        self._manifest = opened.manifest
        self._records = opened.stores.records
        self._keyed = opened.stores.keyed  # texts, data keys and sealing; None in an unencrypted store
        self._vectors = opened.stores.vectors
        self._stores = opened.stores
        self._vectors_location = opened.vectors  # a vector server given at opening, for reader handles
        self._read_only = read_only
        self._encoder = encoder
        self._resolver = resolver
        self._lock_fd = opened.lock_fd
        self._lock = threading.RLock()
        self._dim = int(opened.manifest["encoder"]["dim"])
        self._closed = False
        self._searcher = Searcher(self._records, self._vectors)

    # -- opening ---------------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        *,
        keys: KeyRing | None = None,
        embedding_only: bool = False,
        encoder: Encoder | None = None,
        dim: int | None = None,
        encoder_name: str | None = None,
        resolver: Resolver | None = None,
        vectors: str | None = None,
    ) -> RehearsalMemory:
        """Create an empty memory in ``path`` (a new or empty folder, or a ``postgresql://`` URL whose
        schema does not exist yet).

        Text is always encrypted: a memory that stores text needs ``keys``. An embedding-only memory stores
        no text; with ``keys`` its vectors are sealed too, without them they sit in plain bytes on disk.
        Pass ``encoder``, or ``dim``/``encoder_name`` when vectors are precomputed (the default encoder,
        the packaged MiniLM, is loaded only when texts need embedding).
        ``vectors="milvus://HOST:PORT"`` keeps the vector index in a collection on a Milvus server instead
        of a FAISS file in the folder; the server holds the vectors in the clear (it must search them),
        while texts stay sealed in the folder.
        """
        identity = encoder_identity(encoder, dim, encoder_name)
        opened = create_parts(
            path, keys=keys, embedding_only=embedding_only, identity=identity, vectors=vectors
        )
        memory = cls(opened, read_only=False, encoder=encoder, resolver=resolver)
        finish_create(opened)  # last: see rehearsal.memory.opening
        return memory

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        keys: KeyRing | None = None,
        read_only: bool = False,
        encoder: Encoder | None = None,
        resolver: Resolver | None = None,
        vectors: str | None = None,
        anchor: str | os.PathLike[str] | None = None,
    ) -> RehearsalMemory:
        """Open an existing memory (``read_only``: many readers beside one writer; ``anchor``: see audit)."""
        encoder_name = encoder.name if encoder is not None else None
        opened = open_parts(path, keys=keys, read_only=read_only, encoder_name=encoder_name, vectors=vectors)
        return anchored(cls(opened, read_only=read_only, encoder=encoder, resolver=resolver), anchor, keys)

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def folder(self) -> Path:
        """The memory's folder; ConfigError for a memory on a server, which has none."""
        if not isinstance(self.path, Path):
            raise ConfigError(f"the memory at {self.path} lives on a server and has no folder")
        return self.path

    @property
    def embedding_only(self) -> bool:
        return bool(self._manifest["embedding_only"])

    @property
    def read_only(self) -> bool:
        return self._read_only

    @property
    def generation(self) -> int:
        """The last committed mutation this handle reflects."""
        return self._vectors.generation

    @property
    def store_id(self) -> str:
        """The memory's identity (hex), which its audit log binds to. In an encrypted memory it is the
        one authenticated under the master key; otherwise the manifest's, which nothing authenticates."""
        if self._keyed is not None:
            return self._keyed.store_id.hex()
        return str(self._manifest["store_id"])

    @property
    def encoder_name(self) -> str:
        return str(self._manifest["encoder"]["name"])

    @property
    def encoder(self) -> Encoder:
        """The encoder, loaded on first use (only the packaged default can be loaded by name)."""
        self._encoder = memory_encoder(self._encoder, self.encoder_name, self._dim)
        return self._encoder

    def __len__(self) -> int:
        with self._lock:
            return len(self._vectors)

    def __repr__(self) -> str:
        mode = "embedding-only" if self.embedding_only else "encrypted"
        return (
            f"RehearsalMemory(path={str(self.path)!r}, entries={len(self)}, mode={mode!r}, "
            f"read_only={self._read_only}, keys=<redacted>)"
        )

    # -- writing ---------------------------------------------------------------------------------
    def add(
        self,
        texts: Sequence[str] | None = None,
        *,
        metadata: Sequence[Mapping[str, Any]] | None = None,
        tenant: str | Sequence[str] | None = None,
        vectors: np.ndarray | None = None,
        sources: Sequence[str] | None = None,
    ) -> list[int]:
        """Add a batch; returns the new ids once the batch is durable.

        ``metadata`` items may carry ``task`` (str), ``label`` (int | str), ``tags`` (list of str) — the
        filterable fields — and any other JSON values. ``vectors`` (n, dim), if given, must come from this
        memory's encoder (they are re-normalised); otherwise ``texts`` are embedded here. ``tenant`` is
        one owner for every record, or a list of one per record: either way one transaction, each
        tenant's records sealed under its own key.
        """
        self._check_writable()
        batch = self._batch(texts, metadata, tenant, vectors, sources)
        return self._commit(batch, evict=[])

    def upsert(
        self,
        texts: Sequence[str] | None = None,
        *,
        key: str,
        metadata: Sequence[Mapping[str, Any]],
        tenant: str | Sequence[str] | None = None,
        vectors: np.ndarray | None = None,
        sources: Sequence[str] | None = None,
    ) -> tuple[list[int], list[int]]:
        """Add a batch whose records carry an external id in ``metadata[key]``; the tenant's entries with
        the same ids are replaced in the same transaction. Returns (new ids, replaced ids)."""
        self._check_writable()
        batch = self._batch(texts, metadata, tenant, vectors, sources)
        with self._lock:
            replaced = replaced_ids(self._records, key, batch)
            return self._commit(batch, evict=replaced), replaced

    def admit(
        self,
        texts: Sequence[str] | None = None,
        *,
        policy: AdmissionPolicy,
        rng: np.random.Generator,
        metadata: Sequence[Mapping[str, Any]] | None = None,
        tenant: str | None = None,
        vectors: np.ndarray | None = None,
        sources: Sequence[str] | None = None,
    ) -> list[int]:
        """Offer a batch to an admission policy; evictions and additions commit together.

        The policy's state (e.g. the reservoir's count of items seen) is saved in the same transaction.
        """
        self._check_writable()
        batch = self._batch(texts, metadata, tenant, vectors, sources)
        with self._lock:
            chosen, decision = admit_batch(self._records, policy, batch, rng=rng)
            return self._commit(chosen, evict=decision.evict, state=decision.state)

    def delete(self, ids: Sequence[int]) -> int:
        """Remove entries (index, catalog and text together); any unknown id fails the whole call. No ids
        is no mutation: the generation stays where it is."""
        id_list = check_ids(ids)
        with self._lock:
            self._check_writable()
            if not id_list:
                return 0
            check_present(self._records, id_list)
            self._commit(None, evict=id_list)
        return len(id_list)

    def forget(self, *, tenant: str) -> int:
        """Erase a tenant: its data key is destroyed, its rows and vectors removed, the snapshot rewritten."""
        name = validate_tenant(tenant)
        with self._lock:
            self._check_writable()
            return forget_tenant(self._stores, name)

    def rotate_keys(self, new_keys: KeyRing) -> None:
        """Rewrap every data key under a new master key; records are not re-encrypted."""
        with self._lock:
            self._check_writable()
            if self._keyed is None:
                raise ConfigError("this memory has no keys to rotate")
            try:
                self._keyed.rotate_master_key(new_keys)
            except CleanupError:
                self._keys = new_keys  # committed: the handle goes on under the new key
                raise
            self._keys = new_keys

    def checkpoint(self) -> None:
        """Write the index snapshot at the current generation (opening then replays nothing)."""
        with self._lock, storage_errors("writing the index snapshot"):  # our own errors pass through it
            self._check_writable()
            self._vectors.checkpoint()

    def close(self) -> None:
        """Write the index snapshot if it is behind, release the writer lock and the connections; the
        lock is released even when the snapshot cannot be written (that error is then raised)."""
        with self._lock:
            if self._closed:
                return
            lock_fd, self._lock_fd, self._closed = self._lock_fd, None, True
            close_parts(self._stores, lock_fd, write_snapshot=not self._read_only)

    def reader(
        self, *, keys: KeyRing | None = None, resolver: Resolver | None = None
    ) -> Callable[[], RehearsalMemory]:
        """A picklable callable that opens another read-only handle on this memory, with this handle's keys
        and resolver unless others are given (a DataLoader worker's own handle, say)."""
        return functools.partial(
            RehearsalMemory.open,
            self._location,
            keys=keys if keys is not None else self._keys,
            resolver=resolver if resolver is not None else self._resolver,
            read_only=True,
            vectors=self._vectors_location,
        )

    def __enter__(self) -> RehearsalMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading ---------------------------------------------------------------------------------
    def search(
        self, texts: Sequence[str], k: int = 16, *, where: Mapping[str, Any] | None = None
    ) -> list[list[Hit]]:
        """The k nearest entries to each text, best first, restricted by ``where`` (see ``store.where``)."""
        queries = check_texts(texts)
        return self.search_vectors(self.encoder.encode(queries), k, where=where)

    def search_vectors(
        self,
        vectors: np.ndarray,
        k: int = 16,
        *,
        where: Mapping[str, Any] | None = None,
        threads: int | None = None,
    ) -> list[list[Hit]]:
        """Search with precomputed query vectors (n, dim) -> n lists of up to k hits.

        ``threads`` bounds the index's own threads for this search (None: its default), so a search
        inside a training step does not change the step's thread count.
        """
        queries, k, tree = check_search(vectors, k, where, dim=self._dim)
        with self._lock, self._read_view():
            return self._searcher.search(queries, k, tree, threads=threads)

    def get_texts(self, ids: Sequence[int]) -> list[str]:
        """The texts of ``ids`` in order; NotFoundError names any missing, deleted or erased id."""
        id_list = check_ids(ids)
        found = self.texts_by_id(id_list)
        missing = [i for i in id_list if i not in found]
        if missing:
            raise NotFoundError(f"no text for ids {missing[:10]} (deleted, forgotten or erased upstream)")
        return [found[i] for i in id_list]

    def texts_by_id(self, ids: Sequence[int]) -> dict[int, str]:
        """The texts that exist among ``ids``; missing ones are skipped (the replay path uses this)."""
        id_list = check_ids(ids)
        with self._lock, storage_errors("reading the memory"):
            self._check_open()
            if not self.embedding_only:
                assert self._keyed is not None  # INVARIANT: text-storing memories always have keys
                return vault_texts(self._records, self._keyed, id_list)
            texts, erased = resolve_texts(self._records, self._resolver, id_list)
            if erased:
                self._purge(erased)
            return texts

    def vectors_by_id(self, ids: Sequence[int]) -> dict[int, np.ndarray]:
        """The stored vectors (authenticated, unit float32 rows) of the ids that exist."""
        with self._lock, storage_errors("reading the memory"):
            found, rows = self._vectors.unseal(self._records.vectors_of(check_ids(ids)))
        return {int(i): row for i, row in zip(found, rows, strict=True)}

    def entries(self, ids: Sequence[int]) -> dict[int, EntryRow]:
        """The rows (tenant, task, label, tags, extra metadata, source) for the ids that exist."""
        with self._lock, storage_errors("reading the memory"):
            return self._records.rows(check_ids(ids))

    def ids(self, where: Mapping[str, Any] | None = None) -> list[int]:
        """Ids of all entries matching ``where`` (all entries by default), ascending."""
        with self._lock, storage_errors("reading the memory"):
            return sorted(self._records.matching_ids(parse_where(where), max_gen=self._vectors.generation))

    def changes_since(self, generation: int) -> tuple[list[int], list[int]]:
        """(ids added after ``generation`` and still present, ids removed after it), both ascending."""
        with self._lock, storage_errors("reading the memory"):
            return self._records.changes_since(generation)

    def group_ids(self, by: str = "label", *, where: Mapping[str, Any] | None = None) -> dict[Any, list[int]]:
        """Ids of entries matching ``where`` grouped by ``task``, ``label`` or ``tenant``."""
        by = check_group_by(by)
        with self._lock, storage_errors("reading the memory"):
            return self._records.group_ids(by, parse_where(where), max_gen=self._vectors.generation)

    def refresh(self) -> None:
        """Catch up with commits made by the writer since this handle last looked (readers call this)."""
        with self._lock, storage_errors("reading the memory"):
            self._check_open()
            self._vectors.catch_up()

    def _read_view(self) -> AbstractContextManager[None]:
        """One database snapshot around a search (see ``searching.read_view``)."""
        self._check_open()
        return read_view(self._records, self._vectors, read_only=self._read_only)

    def verify(self) -> dict[str, int]:
        """Authenticate every text, vector and row, and check index, catalog and vault agree (a memory
        without keys checksums its rows: ``metadata_keyed`` is 0)."""
        with self._lock, self._read_view():
            texts = self._keyed if not self.embedding_only else None
            return verify_memory(self._records, texts, self._vectors, keyed=self._keyed is not None)

    def stats(self) -> dict[str, Any]:
        """Entries, tenants, tasks, sizes on disk and the index kind."""
        with self._lock:
            self._check_open()
            return memory_stats(self.path, self._stores, manifest=self._manifest)

    def bench(self, *, queries: int = 200, k: int = 10, seed: int = 0) -> dict[str, Any]:
        """Recall@k and latency of this memory's search against exact search (``rehearsal bench``)."""
        with self._lock:
            self._check_open()
            return bench_memory(self._vectors, self.search_vectors, queries=queries, k=k, seed=seed)

    def _check_open(self) -> None:
        if self._closed:
            raise ValidationError("this memory has been closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self._read_only:
            raise ReadOnlyError(f"memory at {str(self.path)!r} was opened read-only")

    def _commit(
        self, batch: Batch | None, *, evict: list[int], state: Mapping[str, str] | None = None
    ) -> list[int]:
        """One durable transaction: remove ``evict``, add ``batch``, save ``state``; then update the index."""
        with self._lock:
            self._check_writable()
            texts = not self.embedding_only
            with storage_errors("committing to the memory"):
                return commit(self._stores, batch, evict=evict, state=state, store_texts=texts)

    def _batch(self, *args: Any) -> Batch:
        """Checks (and embeds) a batch before anything is written; the encoder loads only if needed."""
        return prepare_batch(*args, dim=self._dim, embedding_only=self.embedding_only, encode=self._embed)

    def _embed(self, texts: list[str]) -> np.ndarray:  # the encoder loads on the first text to embed
        return self.encoder.encode(texts)

    def _purge(self, ids: list[int]) -> None:
        """Drop records whose text was erased upstream: durably if we may write, else from this handle."""
        if self._read_only:
            self._vectors.drop(ids)
        else:
            self._commit(None, evict=ids)
