"""The FAISS vector index of a memory: sealed vectors at rest in the record store, searchable in FAISS,
snapshotted to ``index.snap``.

The record store is the source of truth; the in-process FAISS index follows it generation by generation,
and ``index.snap`` is the index at a known generation so that opening only replays what was committed
after it. In encrypted stores each vector is sealed with its tenant's data key (embeddings can be
inverted back into text) and the snapshot with the store's internal ``_system`` key.

Vectors rest as float16 (format 2; format 1 kept float32; see :mod:`rehearsal.store.vectors_at_rest`):
half the bytes, and the index's own fp16 codes already showed the rounding costs no recall. Every handle
searches the rounded, re-normalised vectors, the writer that added them included, so a reopened memory
answers exactly as the handle that wrote it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rehearsal.errors import IntegrityError
from rehearsal.store.faiss.index import FaissIndex, faiss_threads
from rehearsal.store.faiss.snapshot import read_snapshot, write_snapshot
from rehearsal.store.protocols import ERASE_META_KEY, RecordStore, Sealer
from rehearsal.store.vectors_at_rest import FLOAT16, as_stored, open_vector_rows, seal_vectors

__all__ = ["SNAPSHOT_FILE", "SYSTEM_TENANT", "FaissVectorIndex"]

SNAPSHOT_FILE = "index.snap"
SYSTEM_TENANT = "_system"

# A snapshot is rewritten once this many entries (or the whole index, if larger) wait in the delta.
_DELTA_SNAPSHOT_MIN = 50_000


class FaissVectorIndex:
    """The ``FaissIndex`` of the embedded backend: a FAISS index + generation bookkeeping for one open
    memory; the memory's lock guards every call. ``sealer`` is None in an unencrypted store."""

    def __init__(self, folder: Path, dim: int, records: RecordStore, sealer: Sealer | None) -> None:
        self.folder = folder
        self.dim = dim
        self.records = records
        self.vault = sealer
        self.index = FaissIndex(dim)
        self.generation = 0  # the last committed mutation the index reflects
        self.snapshot_generation = 0  # the generation of index.snap on disk

    # -- vectors at rest ---------------------------------------------------------------------------
    def seal(self, tenant: str, ids: list[int], vectors: np.ndarray) -> list[bytes]:
        return seal_vectors(self.vault, tenant, ids, vectors, dtype=FLOAT16)

    def unseal(self, rows: list[tuple[int, str, bytes]]) -> tuple[np.ndarray, np.ndarray]:
        """Decode catalog rows (id, tenant, blob) into (ids, vectors), unsealing tenant by tenant."""
        return open_vector_rows(self.vault, rows, self.dim, dtype=FLOAT16)

    def load_all(self) -> tuple[np.ndarray, np.ndarray]:
        """Every stored vector, authenticated, in id order."""
        return self.unseal(list(self.records.vectors(min_gen_exclusive=-1)))

    # -- following commits -------------------------------------------------------------------------
    def applied(self, generation: int, evict: list[int], ids: list[int], vectors: np.ndarray | None) -> None:
        """Bring the index in step with a commit that is already durable."""
        self.generation = generation
        if evict:
            self.index.remove(np.asarray(evict, dtype=np.int64))
        if ids and vectors is not None:
            self.index.add(as_stored(vectors, FLOAT16), np.asarray(ids, dtype=np.int64))
        self._after_growth()

    def rebuild_if_outgrown(self) -> bool:
        """Retrain the index when the memory has crossed a size threshold (see FaissIndex.wants_rebuild).

        Writers call this after every commit and on open, so a rebuild cut short by a crash is redone.
        """
        if not self.index.wants_rebuild():
            return False
        ids, vectors = self.load_all()
        self.index = FaissIndex.build(vectors, ids)
        self.write_snapshot()
        return True

    def _after_growth(self) -> None:
        # The commit this follows is already durable; a rebuild only costs time.
        if self.rebuild_if_outgrown():
            return
        if self.generation - self.snapshot_generation > 64 and self._delta_outgrew_snapshot():
            self.write_snapshot()

    def _delta_outgrew_snapshot(self) -> bool:
        pending = self.records.added_count_since(self.snapshot_generation)
        return pending > max(_DELTA_SNAPSHOT_MIN, len(self.index))

    def catch_up(self) -> None:
        """Apply removals and additions committed after ``generation``, read in one transaction."""
        with self.records.read_view():
            latest = self.records.generation
            if latest == self.generation:
                return
            removed = self.records.removed_since(self.generation)
            rows = list(self.records.vectors(min_gen_exclusive=self.generation))
        if removed:
            self.index.remove(np.asarray(removed, dtype=np.int64))
        ids, vectors = self.unseal(rows)
        present = self.index.contains(ids) if len(ids) else np.zeros(0, dtype=bool)
        if (~present).any():
            self.index.add(vectors[~present], ids[~present])
        self.generation = max(latest, 0)

    # -- what the facade reads -----------------------------------------------------------------------
    @property
    def spec(self) -> str:
        return self.index.spec

    @property
    def nprobe(self) -> int:
        return self.index.nprobe

    def __len__(self) -> int:
        return len(self.index)

    def ids(self) -> np.ndarray:
        return self.index.ids()

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        allowed_ids: np.ndarray | None = None,
        threads: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        with faiss_threads(threads):
            return self.index.search(queries, k, allowed_ids=allowed_ids)

    def drop(self, ids: Sequence[int]) -> None:
        self.index.remove(np.asarray(ids, dtype=np.int64))

    def close(self) -> None:
        pass  # nothing held open: the snapshot is written by checkpoint()

    # -- snapshots ---------------------------------------------------------------------------------
    def checkpoint(self, *, force: bool = False) -> None:
        if force or self.snapshot_generation != self.generation:
            self.write_snapshot()

    def write_snapshot(self) -> None:
        payload = self.index.to_bytes()
        if self.vault is not None:
            payload = self.vault.seal(SYSTEM_TENANT, self.generation, payload, purpose="index")
        write_snapshot(self.folder / SNAPSHOT_FILE, self.generation, payload, sealed=self.vault is not None)
        self.snapshot_generation = self.generation

    def load(self) -> None:
        """Load the snapshot (if any) and replay the delta after it."""
        snapshot = self.folder / SNAPSHOT_FILE
        if snapshot.is_file():
            vault = self.vault

            def unseal(gen: int, payload: memoryview) -> bytes:
                assert vault is not None
                return vault.open_sealed(SYSTEM_TENANT, gen, payload, purpose="index")

            gen, payload = read_snapshot(snapshot, unseal if vault is not None else None)
            committed = self.records.generation
            if gen > committed:
                raise IntegrityError(
                    f"the index snapshot is at generation {gen} but the database only at {committed}:"
                    " committed transactions are missing from the database"
                )
            self.index = FaissIndex.from_bytes(payload, authenticated=vault is not None)
            self.generation = self.snapshot_generation = gen
        else:
            # A lost snapshot is recoverable: SQLite holds every vector.
            self.generation = self.snapshot_generation = -1
        self.catch_up()
        # The snapshot plus the replayed delta must be exactly the catalog: a row whose generation was
        # edited below the snapshot's would otherwise be skipped by the replay without a word.
        if len(self.index) != self.records.count():
            raise IntegrityError(
                f"the index holds {len(self.index)} vectors after replay but the catalog"
                f" {self.records.count()} entries: the snapshot or the catalog's generations were altered"
            )

    def holds_erased(self) -> bool:
        """Whether ``index.snap`` predates the last forget, i.e. may still hold a forgotten tenant's vectors
        (a forget killed between its commit and its snapshot rewrite)."""
        erased = int(self.records.get_meta(ERASE_META_KEY, "-1") or -1)
        return self.snapshot_generation < erased
