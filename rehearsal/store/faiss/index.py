"""FaissIndex: a FAISS index with stable int64 ids, deletion, and search restricted to a set of ids.

Vectors are L2-normalised float32, so cosine similarity is the inner product (``METRIC_INNER_PRODUCT``);
the index does not normalise for the caller. Two kinds of index are used, both of which support deletion
(HNSW does not, so it is never chosen):

* ``"IDMap,Flat"`` — exact search, for small memories;
* ``"IVF{nlist},SQ8"`` (``,SQfp16`` / ``,Flat`` codes are still read) — inverted lists, trained by
  :meth:`FaissIndex.build`,
  with a hashtable direct map so vectors can be reconstructed (exact filtered search) and removed by id.

:func:`choose_index_spec` picks the kind from the memory's size; :meth:`FaissIndex.wants_rebuild` tells
the owner when the memory has outgrown its index, and the owner rebuilds with :meth:`FaissIndex.build`.

Thread safety: FAISS searches are safe to run concurrently with each other; ``add``, ``remove`` and the
``nprobe`` setter are not, and must not overlap any other call. The owner (``RehearsalMemory``) holds a lock.
Per-search settings (nprobe, id selector) travel in ``SearchParameters``, so a search mutates nothing.

    # INVARIANT: self._ids is sorted, unique, and holds exactly the ids stored in self._index.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import numpy.typing as npt

from rehearsal.errors import DimensionMismatchError, IntegrityError, StoreFormatError, ValidationError
from rehearsal.store.faiss.spec import (
    EXACT_FILTER_ALWAYS,
    EXACT_FILTER_MAX,
    FILTER_PROBE_FACTOR,
    FLAT_MAX_VECTORS,
    FLAT_SPEC,
    IVF_CODES,
    TRAIN_POINTS_PER_LIST,
    check_int,
    choose_index_spec,
    choose_nprobe,
    parse_spec,
)
from rehearsal.store.faiss.tuning import calibrate_nprobe

# Typed as Any: faiss-cpu's stubs lack DirectMap, SearchParameters keywords and the SWIG helpers.
faiss: Any = importlib.import_module("faiss")

__all__ = ["FaissIndex", "choose_index_spec", "choose_nprobe", "faiss_threads"]

FloatMatrix = npt.NDArray[np.float32]
IdArray = npt.NDArray[np.int64]

_MAGIC = b"RHIX"
_FORMAT_VERSION = 1
_HEADER = struct.Struct(">4sHI")  # magic, format version, metadata length
_DIGEST_BYTES = 32


@contextmanager
def faiss_threads(n: int | None) -> Iterator[None]:
    """Run FAISS on ``n`` OpenMP threads inside the block, then restore the previous count.

    FAISS and torch share the process's OpenMP settings, so a plain ``omp_set_num_threads`` would also
    change the training step's thread count; this restores it on the way out.
    """
    if n is None:
        yield
        return
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def _read_faiss(blob: memoryview) -> Any:
    """Deserialize a FAISS index from a buffer in chunks, without ``deserialize_index``'s whole copy."""
    position = 0

    def read(n: int) -> bytes:
        nonlocal position
        chunk = blob[position : position + n]
        position += len(chunk)
        return bytes(chunk)

    return faiss.read_index(faiss.PyCallbackIOReader(read, 1 << 22))


def _as_vectors(values: npt.ArrayLike, dim: int | None, what: str) -> FloatMatrix:
    arr = np.asarray(values)
    if arr.dtype.kind not in "fiu":
        raise ValidationError(f"{what} must be numeric, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValidationError(f"{what} must be a 2-D array (n, dim), got shape {arr.shape}")
    if dim is not None and arr.shape[1] != dim:
        raise DimensionMismatchError(f"{what} have width {arr.shape[1]}, the index has dim {dim}")
    out = np.ascontiguousarray(arr, dtype=np.float32)
    finite = np.isfinite(out).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise ValidationError(f"{what} row {row} is not finite (NaN or inf)")
    return out


def _as_ids(values: npt.ArrayLike, what: str) -> IdArray:
    arr = np.asarray(values)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise ValidationError(f"{what} must be a 1-D integer array, got dtype {arr.dtype} shape {arr.shape}")
    if arr.dtype.kind == "u" and arr.max() > np.iinfo(np.int64).max:
        raise ValidationError(f"{what} contain {arr.max()}, beyond int64")
    return np.ascontiguousarray(arr, dtype=np.int64)


def _padded(n: int, k: int) -> tuple[FloatMatrix, IdArray]:
    return np.full((n, k), -np.inf, dtype=np.float32), np.full((n, k), -1, dtype=np.int64)


def _selector(ids: IdArray) -> tuple[Any, Any]:
    """A FAISS id selector for sorted unique ``ids``, and the buffer it reads (keep it alive while in use)."""
    top = int(ids[-1])
    # A bitmap is one bit per possible id: cheap to build and test when ids are dense (the memory numbers
    # them sequentially); sparse ids (hashes) fall back to a bloom filter + hash set.
    if top < 64 * len(ids) + (1 << 23):
        mask = np.zeros(top + 1, dtype=bool)
        mask[ids] = True
        bitmap = np.packbits(mask, bitorder="little")
        return faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap)), bitmap
    return faiss.IDSelectorBatch(len(ids), faiss.swig_ptr(ids)), ids


class FaissIndex:
    """Inner-product search over L2-normalised float32 vectors keyed by stable non-negative int64 ids."""

    def __init__(self, dim: int, *, spec: str = FLAT_SPEC) -> None:
        self._dim = check_int("dim", dim, minimum=1)
        self._nlist = parse_spec(spec)
        self._spec = spec
        self._index: Any = faiss.index_factory(self._dim, spec, faiss.METRIC_INNER_PRODUCT)
        if self._nlist:
            self._index.set_direct_map_type(faiss.DirectMap.Hashtable)
        self._nprobe = choose_nprobe(self._nlist) if self._nlist else 0
        self._ids: IdArray = np.zeros(0, dtype=np.int64)
        # The last filter's indexed ids and FAISS selector, for the same allowed-ids array object over the
        # same contents (every add or remove replaces ``_ids``): replay filters every step alike.
        self._filter_cache: tuple[Any, IdArray, IdArray, Any] | None = None

    @classmethod
    def build(
        cls, vectors: npt.ArrayLike, ids: npt.ArrayLike, *, spec: str | None = None, seed: int = 0
    ) -> FaissIndex:
        """A new index of ``vectors`` (n, dim) under ``ids`` (n,); an IVF spec trains on a seeded sample."""
        x = _as_vectors(vectors, None, "vectors")
        chosen = spec if spec is not None else choose_index_spec(len(x), x.shape[1])
        index = cls(x.shape[1], spec=chosen)
        keys = index._check_new_ids(ids, len(x))
        if index._nlist:
            if len(x) < index._nlist:
                raise ValidationError(
                    f"spec {chosen!r} needs at least {index._nlist} vectors to train, got {len(x)}"
                )
            rng = np.random.default_rng(check_int("seed", seed, minimum=0))
            n_train = min(len(x), index._nlist * TRAIN_POINTS_PER_LIST)
            sample = x if n_train == len(x) else x[np.sort(rng.choice(len(x), n_train, replace=False))]
            ivf = faiss.extract_index_ivf(index._index)
            ivf.cp.seed = int(rng.integers(1 << 30))
            ivf.cp.max_points_per_centroid = TRAIN_POINTS_PER_LIST
            index._index.train(sample)
        index._add_checked(x, keys)
        if index._nlist:
            index.nprobe, _ = calibrate_nprobe(index, x, keys, rng=rng, start=choose_nprobe(index._nlist))
        return index

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def spec(self) -> str:
        return self._spec

    @property
    def nprobe(self) -> int:
        """Lists probed per query for IVF; 0 for the flat index. Setting None restores the default."""
        return self._nprobe

    @nprobe.setter
    def nprobe(self, value: int | None) -> None:
        if value is None:
            self._nprobe = choose_nprobe(self._nlist) if self._nlist else 0
        elif not self._nlist:
            if check_int("nprobe", value, minimum=0) != 0:
                raise ValidationError(f"nprobe applies to IVF indexes only; spec {self._spec!r} got {value}")
        else:
            probes = check_int("nprobe", value, minimum=1)
            if probes > self._nlist:
                raise ValidationError(f"nprobe must be <= nlist={self._nlist}, got {probes}")
            self._nprobe = probes
            self._index.nprobe = probes

    def __len__(self) -> int:
        return len(self._ids)

    def __repr__(self) -> str:
        return f"FaissIndex(dim={self._dim}, spec={self._spec!r}, n={len(self)}, nprobe={self._nprobe})"

    def _check_new_ids(self, ids: npt.ArrayLike, n: int) -> IdArray:
        keys = _as_ids(ids, "ids")
        if keys.shape != (n,):
            raise ValidationError(f"ids must have shape ({n},) to match the vectors, got {keys.shape}")
        if n == 0:
            return keys
        if keys.min() < 0:
            raise ValidationError(f"ids must be non-negative, got {int(keys.min())}")
        ordered = np.sort(keys)
        repeated = ordered[1:][ordered[1:] == ordered[:-1]]
        if len(repeated):
            raise ValidationError(f"ids must be unique within a batch; {int(repeated[0])} is repeated")
        present = keys[self._mask(keys)]
        if len(present):
            raise ValidationError(f"id {int(present[0])} is already in the index")
        return keys

    def _mask(self, keys: IdArray) -> npt.NDArray[np.bool_]:
        pos = np.searchsorted(self._ids, keys)
        inside = pos < len(self._ids)
        mask = np.zeros(len(keys), dtype=bool)
        mask[inside] = self._ids[pos[inside]] == keys[inside]
        return mask

    def add(self, vectors: npt.ArrayLike, ids: npt.ArrayLike) -> None:
        """Add ``vectors`` (n, dim) under new ``ids`` (n,). All input is checked before anything changes."""
        if not self._index.is_trained:
            raise ValidationError(f"spec {self._spec!r} is untrained: create it with FaissIndex.build(...)")
        x = _as_vectors(vectors, self._dim, "vectors")
        self._add_checked(x, self._check_new_ids(ids, len(x)))

    def _add_checked(self, x: FloatMatrix, keys: IdArray) -> None:
        if len(keys) == 0:
            return
        self._index.add_with_ids(x, keys)
        ordered = np.sort(keys)
        self._ids = np.insert(self._ids, np.searchsorted(self._ids, ordered), ordered)

    def remove(self, ids: npt.ArrayLike) -> int:
        """Remove the given ids; ids not present are ignored. Returns how many were removed."""
        keys = np.unique(_as_ids(ids, "ids"))
        present = keys[self._mask(keys)]
        if len(present) == 0:
            return 0
        # The IVF hashtable direct map removes only through an IDSelectorArray (DirectMap::remove_ids).
        if self._nlist:
            removed = self._index.remove_ids(faiss.IDSelectorArray(len(present), faiss.swig_ptr(present)))
        else:
            removed = self._index.remove_ids(faiss.IDSelectorBatch(len(present), faiss.swig_ptr(present)))
        self._ids = np.delete(self._ids, np.searchsorted(self._ids, present))
        if removed != len(present) or self._index.ntotal != len(self._ids):
            raise IntegrityError(
                f"index removed {removed} of {len(present)} ids; id bookkeeping is out of step"
            )
        return len(present)

    def contains(self, ids: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        """A boolean mask: which of ``ids`` are in the index."""
        return self._mask(_as_ids(ids, "ids"))

    def ids(self) -> IdArray:
        """Every id in the index, sorted."""
        return self._ids.copy()

    def search(
        self, queries: npt.ArrayLike, k: int, *, allowed_ids: npt.ArrayLike | None = None
    ) -> tuple[FloatMatrix, IdArray]:
        """Top-``k`` by inner product: ``queries`` (n, dim) -> (scores (n, k) float32, ids (n, k) int64).

        Rows with fewer than ``k`` hits are padded with id -1 and score -inf. ``allowed_ids`` restricts the
        search to those ids inside FAISS (unknown ids are ignored); an IVF search then widens its probe, or
        scores the allowed vectors exactly, so that it returns min(k, allowed) hits.
        """
        k = check_int("k", k, minimum=1)
        q = _as_vectors(queries, self._dim, "queries")
        if len(q) == 0:
            raise ValidationError("queries is empty; pass at least one row")
        if allowed_ids is None:
            if len(self) == 0:
                return _padded(len(q), k)
            return self._search(q, k, len(self), None, self._nprobe)
        allowed, selector = self._allowed(allowed_ids)
        if len(allowed) == 0:
            return _padded(len(q), k)
        if not self._nlist:
            return self._search(q, k, len(allowed), allowed, 0, selector)
        # Widen the probe by the inverse of the allowed share (times a margin: the allowed neighbours sit
        # farther away than unfiltered ones), so about as many allowed vectors are scanned as an unfiltered
        # search scans vectors.
        probes = min(self._nlist, math.ceil(FILTER_PROBE_FACTOR * self._nprobe * len(self) / len(allowed)))
        if len(allowed) <= EXACT_FILTER_ALWAYS or (
            len(allowed) <= EXACT_FILTER_MAX and 4 * probes >= self._nlist
        ):
            return self._exact(q, k, allowed)
        return self._search(q, k, len(allowed), allowed, probes, selector)

    def _allowed(self, allowed_ids: npt.ArrayLike) -> tuple[IdArray, Any]:
        """The indexed ids among ``allowed_ids`` and a FAISS selector over them (with the buffer it reads)."""
        cached = self._filter_cache
        if cached is not None and cached[0] is allowed_ids and cached[1] is self._ids:
            return cached[2], cached[3]
        keys = np.unique(_as_ids(allowed_ids, "allowed_ids"))
        allowed = keys[self._mask(keys)]
        selector = _selector(allowed) if len(allowed) else (None, None)
        self._filter_cache = (allowed_ids, self._ids, allowed, selector)
        return allowed, selector

    def _search(
        self,
        q: FloatMatrix,
        k: int,
        population: int,
        allowed: IdArray | None,
        probes: int,
        selector: Any = None,
    ) -> tuple[FloatMatrix, IdArray]:
        if allowed is None:
            sel = None
        else:
            sel, _buffer = selector if selector is not None else _selector(allowed)
        scores, found = self._faiss_search(q, k, sel, probes)
        short = (found < 0).sum(axis=1) > max(0, k - population)
        if self._nlist and short.any():
            # The probed lists held fewer than k candidates: scan every list for those rows.
            rows = np.flatnonzero(short)
            scores[rows], found[rows] = self._faiss_search(q[rows], k, sel, self._nlist)
        scores[found < 0] = -np.inf
        return scores, found

    def _faiss_search(self, q: FloatMatrix, k: int, sel: Any, probes: int) -> tuple[FloatMatrix, IdArray]:
        if self._nlist:
            params = faiss.SearchParametersIVF(nprobe=probes)
        else:
            params = faiss.SearchParameters() if sel is not None else None
        if sel is not None:
            params.sel = sel
        scores, found = self._index.search(q, k, params=params)
        return np.asarray(scores, dtype=np.float32), np.asarray(found, dtype=np.int64)

    def _exact(self, q: FloatMatrix, k: int, allowed: IdArray) -> tuple[FloatMatrix, IdArray]:
        vectors = self._index.reconstruct_batch(allowed)
        sims = q @ vectors.T
        scores, found = _padded(len(q), k)
        take = min(k, len(allowed))
        top = np.argpartition(-sims, take - 1, axis=1)[:, :take]
        top_sims = np.take_along_axis(sims, top, axis=1)
        order = np.argsort(-top_sims, axis=1, kind="stable")
        scores[:, :take] = np.take_along_axis(top_sims, order, axis=1)
        found[:, :take] = allowed[np.take_along_axis(top, order, axis=1)]
        return scores, found

    def wants_rebuild(self) -> bool:
        """Whether the memory has outgrown (or shrunk well below) this spec enough that a rebuild pays."""
        target = parse_spec(choose_index_spec(len(self), self._dim))
        if not self._nlist:
            return target > 0
        if not target:
            # Hysteresis: a shrinking memory goes back to exact search only well below the threshold.
            return len(self) < FLAT_MAX_VECTORS // 4
        # An index with other codes than today's (a snapshot written with SQfp16 codes before SQ8 became
        # the rule) is retrained by the next writer, so older memories shrink to the same disk cost.
        stale_codes = self._spec.endswith(",SQfp16") and IVF_CODES != "SQfp16"
        return max(target / self._nlist, self._nlist / target) >= 4 or stale_codes

    def to_bytes(self) -> bytes:
        """A self-describing snapshot: header, JSON metadata, the FAISS index, and a SHA-256 of both."""
        meta = json.dumps(
            {"spec": self._spec, "dim": self._dim, "nprobe": self._nprobe, "ntotal": len(self)},
            sort_keys=True,
        ).encode()
        blob: bytes = faiss.serialize_index(self._index).tobytes()
        body = _HEADER.pack(_MAGIC, _FORMAT_VERSION, len(meta)) + meta + blob
        return body + hashlib.sha256(body).digest()

    @classmethod
    def from_bytes(cls, data: bytes, *, authenticated: bool = False) -> FaissIndex:
        """The index written by :meth:`to_bytes`; StoreFormatError if foreign, IntegrityError if damaged.

        ``authenticated=True`` skips the SHA-256 check for bytes that an AEAD already authenticated (a
        sealed snapshot): a full extra pass over what is, for a large memory, gigabytes.
        """
        view = memoryview(data)
        if len(view) < _HEADER.size + _DIGEST_BYTES:
            raise IntegrityError(f"vector index snapshot is truncated ({len(view)} bytes)")
        magic, version, meta_len = _HEADER.unpack_from(view)
        if magic != _MAGIC:
            raise StoreFormatError(f"not a rehearsal vector index (magic {bytes(magic)!r})")
        if version > _FORMAT_VERSION:
            raise StoreFormatError(
                f"vector index format {version} is newer than supported ({_FORMAT_VERSION})"
            )
        body, digest = view[:-_DIGEST_BYTES], view[-_DIGEST_BYTES:]
        if not authenticated and hashlib.sha256(body).digest() != digest:
            raise IntegrityError("vector index snapshot fails its SHA-256 check")
        try:
            meta = json.loads(bytes(body[_HEADER.size : _HEADER.size + meta_len]))
            index = cls(int(meta["dim"]), spec=str(meta["spec"]))
            index._index = _read_faiss(body[_HEADER.size + meta_len :])
            ivf = faiss.try_extract_index_ivf(index._index)
            kind_ok = ivf.nlist == index._nlist if ivf is not None else hasattr(index._index, "id_map")
            if not kind_ok or index._index.d != index._dim or index._index.ntotal != meta["ntotal"]:
                raise IntegrityError(f"vector index snapshot disagrees with its metadata {meta}")
            if ivf is not None:
                ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
            index.nprobe = meta["nprobe"]
        except (ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise IntegrityError(f"vector index snapshot is malformed: {exc}") from exc
        index._ids = index._read_ids()
        return index

    def _read_ids(self) -> IdArray:
        if self._nlist:
            invlists = faiss.extract_index_ivf(self._index).invlists
            parts = [
                faiss.rev_swig_ptr(invlists.get_ids(lst), invlists.list_size(lst)).copy()
                for lst in range(invlists.nlist)
                if invlists.list_size(lst)
            ]
            found = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        else:
            found = faiss.vector_to_array(self._index.id_map)
        ordered = np.sort(found.astype(np.int64))
        if len(ordered) != self._index.ntotal or (ordered[1:] == ordered[:-1]).any():
            raise IntegrityError("vector index snapshot holds repeated or missing ids")
        return ordered
