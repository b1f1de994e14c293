"""RehearsalMemory: an encoder and the store protocols (records, texts, sealing, vector index) behind one
durable facade; ``rehearsal.store.registry`` opens the backends (the embedded default: SQLite + FAISS).

On disk a memory is one folder (see ``indexes/README.md``)::

    memory.json     manifest: format version, store id, mode, encoder name and width
    memory.sqlite   SQLite (WAL), the source of truth: catalog (ids, metadata, vectors) + vault (keys, text)
    index.snap      FAISS index snapshot at a known generation, sealed in encrypted stores
    writer.lock     held (flock) by the one process that has the memory open for writing

An add is acknowledged only after its SQLite transaction committed with full fsync; the index snapshot is
rewritten only on ``checkpoint()``/``close()``, after an index rebuild, or once the un-snapshotted delta
outgrows the snapshot, so no add rewrites the whole index. Opening replays the delta from SQLite.

A memory can also live on a PostgreSQL server with pgvector (``create``/``open`` a ``postgresql://`` URL):
the same calls, records, sealed texts and vectors in one schema, no folder and no writer lock.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from rehearsal.crypto.keys import KeyRing, validate_tenant
from rehearsal.embedding import Encoder, default_encoder_named, encoder_identity
from rehearsal.errors import (
    CleanupError,
    ConfigError,
    EncoderMismatchError,
    IntegrityError,
    NotFoundError,
    ReadOnlyError,
    ValidationError,
)
from rehearsal.memory.admission import decide_admission, policy_state_key
from rehearsal.memory.batch import (
    Batch,
    check_ids,
    check_texts,
    check_vectors,
    external_ids,
    prepare_batch,
)
from rehearsal.memory.bench import bench_memory
from rehearsal.memory.commit import commit
from rehearsal.memory.opening import Opened, create_parts, finish_create, open_parts
from rehearsal.memory.policies import AdmissionPolicy
from rehearsal.memory.searching import Resolver, Searcher, resolve_texts
from rehearsal.memory.verification import memory_stats, verify_memory
from rehearsal.store.failures import storage_errors
from rehearsal.store.layout import FORMAT_VERSION
from rehearsal.store.protocols import ERASE_META_KEY
from rehearsal.store.types import EntryRow, Hit
from rehearsal.store.where import parse_where

__all__ = ["FORMAT_VERSION", "Hit", "RehearsalMemory", "Resolver"]

DEFAULT_TENANT = "default"


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
    ) -> RehearsalMemory:
        """Open an existing memory; ``read_only`` opens many readers beside one writer."""
        encoder_name = encoder.name if encoder is not None else None
        with storage_errors(f"opening the memory at {os.fspath(path)!r}"):
            opened = open_parts(
                path, keys=keys, read_only=read_only, encoder_name=encoder_name, vectors=vectors
            )
        return cls(opened, read_only=read_only, encoder=encoder, resolver=resolver)

    # -- properties ------------------------------------------------------------------------------
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
        if self._encoder is None:
            self._encoder = default_encoder_named(self.encoder_name)
            if self._encoder is None:
                raise ConfigError(
                    f"memory uses encoder {self.encoder_name!r}; pass encoder= to open()/create()"
                )
        if self._encoder.dim != self._dim:
            raise EncoderMismatchError(f"encoder width {self._encoder.dim} != memory width {self._dim}")
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
        batch = self._prepare_batch(texts, metadata, tenant, vectors, sources)
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
        batch = self._prepare_batch(texts, metadata, tenant, vectors, sources)
        values = external_ids(key, batch.metadata, batch.tenants)
        with self._lock:
            replaced: list[int] = []
            for owner, at in batch.by_tenant().items():
                replaced += self._records.ids_by_key(key, [values[p] for p in at], tenant=owner)
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
        batch = self._prepare_batch(texts, metadata, tenant, vectors, sources)
        with self._lock:
            saved = self._records.get_meta(policy_state_key(policy))
            decision = decide_admission(policy, batch.metadata, self._records.all_rows(), saved, rng=rng)
            chosen = batch.subset(decision.keep) if decision.keep else None
            return self._commit(chosen, evict=decision.evict, state=decision.state)

    def delete(self, ids: Sequence[int]) -> int:
        """Remove entries (index, catalog and text together); any unknown id fails the whole call. No ids
        is no mutation: the generation stays where it is."""
        id_list = check_ids(ids)
        with self._lock:
            self._check_writable()
            if not id_list:
                return 0
            missing = set(id_list) - self._records.existing(id_list)
            if missing:
                raise NotFoundError(f"no entries with ids {sorted(missing)[:10]}")
            self._commit(None, evict=id_list)
        return len(id_list)

    def forget(self, *, tenant: str) -> int:
        """Erase a tenant: its data key is destroyed, its rows and vectors removed, the snapshot rewritten."""
        name = validate_tenant(tenant)
        with self._lock:
            self._check_writable()
            ids = self._records.ids_of_tenant(name)
            known = self._keyed is not None and name in self._keyed.tenants()
            if not ids and not known:
                raise NotFoundError(f"no tenant {name!r} in this memory")
            with storage_errors(f"forgetting tenant {name!r}"):
                with self._records.transaction():
                    gen = self._records.bump_generation()
                    self._records.remove(ids, generation=gen)
                    # Until the snapshot below replaces the old one, it holds the tenant's vectors: a
                    # forget killed before that leaves the mark for the next open to finish the job.
                    self._records.set_meta(ERASE_META_KEY, str(gen))
                    if self._keyed is not None and known:
                        self._keyed.shred(name)
                self._vectors.applied(gen, ids, [], None)
                # The old snapshot still holds the tenant's vectors: replace it now, not at close.
                self._vectors.checkpoint(force=True)
                self._records.compact()
        return len(ids)

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
        with self._lock:
            self._check_writable()
            with storage_errors("writing the index snapshot"):
                self._vectors.checkpoint()

    def close(self) -> None:
        """Write the index snapshot if it is behind, release the writer lock and the connections; the
        lock is released even when the snapshot cannot be written (that error is then raised)."""
        with self._lock:
            if self._closed:
                return
            # The connection and the writer lock are released even when the last snapshot fails (a full
            # disk): SQLite holds every acknowledged record, the snapshot only spares the next open a replay.
            try:
                if not self._read_only:
                    with storage_errors("writing the index snapshot at close"):
                        self._vectors.checkpoint()
            finally:
                self._closed = True
                try:
                    self._stores.close()
                finally:
                    if self._lock_fd is not None:
                        os.close(self._lock_fd)
                        self._lock_fd = None

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
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValidationError(f"k must be a positive int, got {k!r}")
        queries = check_vectors(vectors, self._dim)
        tree = parse_where(where)
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
                # The catalog rows are read (and so authenticated) too, in the same database snapshot as
                # the texts: a text is handed out only for an entry whose row checks out, and an entry
                # without its text is a damaged vault (INVARIANT: a text for every entry), not a miss.
                with self._records.read_view():
                    rows = self._records.rows(id_list)
                    texts = self._keyed.get_present(id_list)
                lost = sorted(set(rows) - texts.keys())
                if lost:
                    raise IntegrityError(f"entries {lost[:10]} have no text in the vault (it was altered)")
                return {i: text for i, text in texts.items() if i in rows}
            return self._resolve(id_list)

    def entries(self, ids: Sequence[int]) -> dict[int, EntryRow]:
        """Catalog rows (tenant, task, label, tags, extra metadata, source) for the ids that exist."""
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
        if by not in ("task", "label", "tenant"):
            raise ValidationError(f"'by' must be 'task', 'label' or 'tenant', got {by!r}")
        with self._lock, storage_errors("reading the memory"):
            return self._records.group_ids(by, parse_where(where), max_gen=self._vectors.generation)

    def refresh(self) -> None:
        """Catch up with commits made by the writer since this handle last looked (readers call this)."""
        with self._lock, storage_errors("reading the memory"):
            self._check_open()
            self._vectors.catch_up()

    @contextmanager
    def _read_view(self) -> Iterator[None]:
        """One SQLite read transaction around a search: a reader catches up and then reads the catalog in
        the same database snapshot, so a writer committing meanwhile cannot tear the result (e.g. a hit
        whose row was deleted between the index search and the metadata lookup)."""
        self._check_open()
        with storage_errors("reading the memory"):
            if not self._read_only:
                yield
                return
            with self._records.read_view():
                self._vectors.catch_up()
                yield

    def verify(self) -> dict[str, int]:
        """Authenticate every stored text, vector and catalog row and check index, catalog and vault agree.
        A memory made without keys can only checksum its rows (``metadata_keyed`` is 0 then)."""
        with self._lock, self._read_view():
            texts = self._keyed if not self.embedding_only else None
            return verify_memory(self._records, texts, self._vectors, keyed=self._keyed is not None)

    def stats(self) -> dict[str, Any]:
        """Entries, tenants, tasks, sizes on disk and the index kind."""
        identity = {
            "path": str(self.path),
            "encoder": self.encoder_name,
            "dim": self.dim,
            "embedding_only": self.embedding_only,
            "encrypted": self._keyed is not None,
        }
        with self._lock:
            self._check_open()
            return memory_stats(self.path, self._records, self._vectors, identity=identity)

    def bench(self, *, queries: int = 200, k: int = 10, seed: int = 0) -> dict[str, Any]:
        """Recall@k and latency of this memory's search against exact search (``rehearsal bench``)."""
        with self._lock:
            self._check_open()
            return bench_memory(self._vectors, self.search_vectors, queries=queries, k=k, seed=seed)

    # -- internals -------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise ValidationError("this memory has been closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self._read_only:
            raise ReadOnlyError(f"memory at {str(self.path)!r} was opened read-only")

    def _prepare_batch(
        self,
        texts: Sequence[str] | None,
        metadata: Sequence[Mapping[str, Any]] | None,
        tenant: str | Sequence[str] | None,
        vectors: np.ndarray | None,
        sources: Sequence[str] | None,
    ) -> Batch:
        self._check_writable()
        return prepare_batch(
            texts,
            metadata,
            tenant if tenant is not None else DEFAULT_TENANT,
            vectors,
            sources,
            dim=self._dim,
            embedding_only=self.embedding_only,
            encode=lambda t: self.encoder.encode(t),
        )

    def _commit(
        self, batch: Batch | None, *, evict: list[int], state: Mapping[str, str] | None = None
    ) -> list[int]:
        """One durable transaction: remove ``evict``, add ``batch``, save ``state``; then update the index."""
        with self._lock:
            self._check_writable()
            with storage_errors("committing to the memory"):
                return commit(
                    self._stores, batch, evict=evict, state=state, store_texts=not self.embedding_only
                )

    def _resolve(self, ids: list[int]) -> dict[int, str]:
        if self._resolver is None:
            raise ConfigError("an embedding-only memory needs resolver= to turn sources into texts")
        texts, erased = resolve_texts(self._records, self._resolver, ids)
        if erased:
            self._purge(erased)
        return texts

    def _purge(self, ids: list[int]) -> None:
        """Drop records whose text was erased upstream: durably if we may write, else from this handle."""
        if self._read_only:
            self._vectors.drop(ids)
        else:
            self._commit(None, evict=ids)
