"""Checks on what callers hand to a memory; every failure is a ValidationError naming the culprit."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rehearsal.crypto.keys import validate_tenant
from rehearsal.errors import DimensionMismatchError, ValidationError
from rehearsal.store.where import Where, parse_where

__all__ = [
    "DEFAULT_TENANT",
    "Batch",
    "check_group_by",
    "check_ids",
    "check_int64",
    "check_k",
    "check_metadata",
    "check_search",
    "check_sources",
    "check_tenants",
    "check_texts",
    "check_vectors",
    "prepare_batch",
]

DEFAULT_TENANT = "default"  # the owner of records added without a tenant


def check_texts(texts: object) -> list[str]:
    """A non-empty list of non-blank strings.

    Empty or whitespace-only texts are refused here (the vault itself stores "" faithfully): they embed to
    a meaningless vector and replaying them teaches nothing.
    """
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence):
        raise ValidationError(f"texts must be a list of str, got {type(texts).__name__}")
    out = list(texts)
    for i, text in enumerate(out):
        if not isinstance(text, str):
            raise ValidationError(f"texts[{i}] must be str, got {type(text).__name__}")
        if not text.strip():
            raise ValidationError(f"texts[{i}] is empty or blank; a memory stores only non-blank texts")
        _check_encodable(text, f"texts[{i}]")
    return out


def _check_encodable(text: str, what: str) -> None:
    # A lone surrogate ("\ud800", which JSON's "\\ud800" escape produces) is a str but not Unicode text:
    # the tokenizer, SQLite and the vault would each fail on it later, with their own errors.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValidationError(
            f"{what} is not valid Unicode text (a lone surrogate at position {exc.start})"
        ) from None


# SQLite stores integers as int64; a larger Python int would fail there with an OverflowError.
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


def check_int64(value: int, what: str) -> int:
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValidationError(f"{what} must fit in a signed 64-bit integer, got {value}")
    return value


def check_metadata(metadata: object, n: int) -> list[dict[str, Any]]:
    if metadata is None:
        return [{} for _ in range(n)]
    if isinstance(metadata, (str, bytes, Mapping)) or not isinstance(metadata, Sequence):
        raise ValidationError(
            f"metadata must be a list of dicts (one per text), got {type(metadata).__name__}"
        )
    if len(metadata) != n:
        raise ValidationError(f"metadata has {len(metadata)} items for {n} texts")
    out: list[dict[str, Any]] = []
    for i, meta in enumerate(metadata):
        if not isinstance(meta, Mapping):
            raise ValidationError(f"metadata[{i}] must be a dict, got {type(meta).__name__}")
        keys = _non_string_keys(meta)
        if keys:
            # JSON would store 1 as "1": what comes back would not be what was given.
            raise ValidationError(f"metadata[{i}] has a key that is not a string: {keys[0]!r}")
        task = meta.get("task")
        if task is not None and not isinstance(task, str):
            raise ValidationError(f"metadata[{i}]['task'] must be str, got {task!r}")
        label = meta.get("label")
        if label is not None and (isinstance(label, bool) or not isinstance(label, (int, str))):
            raise ValidationError(f"metadata[{i}]['label'] must be int or str, got {label!r}")
        if isinstance(label, int):
            check_int64(label, f"metadata[{i}]['label']")
        tags = meta.get("tags", [])
        if (
            isinstance(tags, str)
            or not isinstance(tags, Sequence)
            or not all(isinstance(t, str) for t in tags)
        ):
            raise ValidationError(f"metadata[{i}]['tags'] must be a list of str, got {tags!r}")
        if "tenant" in meta or "source" in meta or "id" in meta:
            raise ValidationError(f"metadata[{i}] may not set 'id', 'tenant' or 'source'; they are arguments")
        try:
            encoded = json.dumps(dict(meta), ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise ValidationError(f"metadata[{i}] is not JSON-serialisable: {exc}") from exc
        _check_encodable(encoded, f"metadata[{i}]")
        out.append({**meta, "tags": list(tags)})
    return out


def _non_string_keys(value: object) -> list[object]:
    """The keys (at any depth) of ``value``'s dicts that are not str."""
    if isinstance(value, Mapping):
        found = [key for key in value if not isinstance(key, str)]
        return found + [key for item in value.values() for key in _non_string_keys(item)]
    if isinstance(value, (list, tuple)):
        return [key for item in value for key in _non_string_keys(item)]
    return []


def check_sources(sources: object, n: int) -> list[str]:
    if isinstance(sources, (str, bytes)) or not isinstance(sources, Sequence):
        raise ValidationError("an embedding-only memory needs 'sources': one reference string per record")
    if len(sources) != n:
        raise ValidationError(f"sources has {len(sources)} items for {n} records")
    for i, source in enumerate(sources):
        if not isinstance(source, str) or not source:
            raise ValidationError(f"sources[{i}] must be a non-empty str, got {source!r}")
        _check_encodable(source, f"sources[{i}]")
    return list(sources)


def check_vectors(vectors: object, dim: int, *, n: int | None = None) -> np.ndarray:
    """(n, dim) finite non-zero rows, returned as contiguous float32 of unit norm (cosine = dot product)."""
    if isinstance(vectors, np.ndarray) and vectors.dtype.kind == "c":
        # Casting would drop the imaginary parts with only a warning: not the vectors the caller meant.
        raise ValidationError(f"vectors must be real, got complex values (dtype {vectors.dtype})")
    try:
        array = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"vectors must be a numeric (n, {dim}) array: {exc}") from exc
    if array.ndim != 2:
        raise ValidationError(f"vectors must be 2-D (n, {dim}), got shape {array.shape}")
    if array.shape[1] != dim:
        raise DimensionMismatchError(f"vectors have width {array.shape[1]}, the memory's is {dim}")
    if array.shape[0] == 0:
        raise ValidationError("empty batch: no vectors given")
    if n is not None and array.shape[0] != n:
        raise ValidationError(f"{array.shape[0]} vectors for {n} records")
    finite = np.isfinite(array).all(axis=1)
    if not finite.all():
        raise ValidationError(f"vector {int(np.argmin(finite))} contains NaN or inf")
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValidationError(f"vector {int(np.argmin(norms[:, 0]))} is all zeros")
    return np.ascontiguousarray(array / norms, dtype=np.float32)


def check_ids(ids: object) -> list[int]:
    if isinstance(ids, (str, bytes)) or not isinstance(ids, (Sequence, np.ndarray)):
        raise ValidationError(f"ids must be a list of int, got {type(ids).__name__}")
    out: list[int] = []
    for i, value in enumerate(ids):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValidationError(f"ids[{i}] must be a non-negative int, got {value!r}")
        out.append(check_int64(int(value), f"ids[{i}]"))
    if len(set(out)) != len(out):
        raise ValidationError("ids contain duplicates")
    return out


def check_k(k: object) -> int:
    """A positive int: how many neighbours a search returns at most."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValidationError(f"k must be a positive int, got {k!r}")
    return k


def check_search(
    vectors: object, k: object, where: Mapping[str, Any] | None, *, dim: int
) -> tuple[np.ndarray, int, Where | None]:
    """A search's queries (n, dim), its k and its filter tree, checked in that order."""
    count = check_k(k)
    return check_vectors(vectors, dim), count, parse_where(where)


def check_group_by(by: object) -> str:
    """One of the fields entries can be grouped by."""
    if by not in ("task", "label", "tenant"):
        raise ValidationError(f"'by' must be 'task', 'label' or 'tenant', got {by!r}")
    return str(by)


def check_tenants(tenant: str | Sequence[str], n: int) -> list[str]:
    """One valid tenant name per record: ``tenant`` is one name for all, or a list of one per record."""
    if isinstance(tenant, str):
        return [validate_tenant(tenant)] * n
    if isinstance(tenant, bytes) or not isinstance(tenant, Sequence):
        raise ValidationError(f"tenant must be a str or a list of str, got {type(tenant).__name__}")
    if len(tenant) != n:
        raise ValidationError(f"tenant lists {len(tenant)} names for {n} records")
    return [validate_tenant(name) for name in tenant]


@dataclass(frozen=True)
class Batch:
    """A checked batch ready to commit: one item per record in every list, vectors (n, dim) unit rows."""

    texts: list[str] | None  # None in an embedding-only memory fed precomputed vectors
    metadata: list[dict[str, Any]]
    tenants: list[str]
    vectors: np.ndarray
    sources: list[str | None]

    def subset(self, positions: Sequence[int]) -> Batch:
        keep = list(positions)
        return Batch(
            texts=None if self.texts is None else [self.texts[p] for p in keep],
            metadata=[self.metadata[p] for p in keep],
            tenants=[self.tenants[p] for p in keep],
            vectors=self.vectors[keep],
            sources=[self.sources[p] for p in keep],
        )

    def by_tenant(self) -> dict[str, list[int]]:
        """The positions of each tenant's records, tenants in order of first appearance: a batch is sealed
        and stored one tenant at a time, each under its own data key."""
        groups: dict[str, list[int]] = {}
        for position, tenant in enumerate(self.tenants):
            groups.setdefault(tenant, []).append(position)
        return groups


def prepare_batch(
    texts: Sequence[str] | None,
    metadata: Sequence[Mapping[str, Any]] | None,
    tenant: str | Sequence[str] | None,
    vectors: object | None,
    sources: Sequence[str] | None,
    *,
    dim: int,
    embedding_only: bool,
    encode: Callable[[list[str]], np.ndarray],
) -> Batch:
    """Check everything about a batch before anything is written; ``encode`` runs only without vectors."""
    text_list = None if texts is None and embedding_only and vectors is not None else check_texts(texts)
    n = len(text_list) if text_list is not None else len(np.asarray(vectors))
    if n == 0:
        raise ValidationError("empty batch: nothing to add")
    metas = check_metadata(metadata, n)
    tenants = check_tenants(tenant if tenant is not None else DEFAULT_TENANT, n)
    if embedding_only:
        source_list: list[str | None] = list(check_sources(sources, n))
    elif sources is not None:
        raise ValidationError("'sources' is only for embedding-only memories; this one stores the text")
    else:
        source_list = [None] * n
    if vectors is None:
        assert text_list is not None  # INVARIANT: texts are required whenever vectors are not given
        vectors = encode(text_list)
    vecs = check_vectors(vectors, dim, n=n)
    return Batch(texts=text_list, metadata=metas, tenants=tenants, vectors=vecs, sources=source_list)


_KEY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")


def external_ids(key: str, metadata: Sequence[Mapping[str, Any]], tenants: Sequence[str]) -> list[Any]:
    """The external ids (``metadata[key]``, str or int) of an upsert batch: present, typed and distinct
    within each tenant (two tenants may use the same id for their own records)."""
    if not isinstance(key, str) or not _KEY_NAME.fullmatch(key) or key in ("task", "label", "tags"):
        raise ValidationError(f"the upsert key must be an extra-metadata field name, got {key!r}")
    values: list[Any] = []
    for position, item in enumerate(metadata):
        value = item.get(key)
        if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
            raise ValidationError(f"record {position}: {key!r} must be a non-empty str or int, got {value!r}")
        values.append(value)
    owned = list(zip(tenants, values, strict=True))
    if len(set(owned)) != len(owned):
        twice = sorted({str(v) for t, v in owned if owned.count((t, v)) > 1})[:5]
        raise ValidationError(f"the batch holds {key!r} values more than once: {twice}")
    return values
