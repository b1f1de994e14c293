"""Audit entries for memory mutations and training updates, and a memory wrapper that writes them.

Details are summaries (counts, id ranges, digests, tenants, tags, metrics), never texts: see
:func:`rehearsal.audit.check_details`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rehearsal.audit import AuditEntry, AuditLog, canonical_json, ids_digest

if TYPE_CHECKING:
    from rehearsal.crypto import KeyRing
    from rehearsal.memory import RehearsalMemory

__all__ = [
    "AuditedMemory",
    "config_digest",
    "log_delete",
    "log_forget",
    "log_ingest",
    "log_train_update",
]


def config_digest(config: Mapping[str, Any]) -> str:
    """SHA-256 of a config's canonical JSON: the same config always gives the same digest."""
    return hashlib.sha256(canonical_json(dict(config))).hexdigest()[:32]


def _id_summary(ids: list[int]) -> dict[str, Any]:
    return {
        "count": len(ids),
        "first_id": min(ids) if ids else None,
        "last_id": max(ids) if ids else None,
        "ids_hash": ids_digest(sorted(ids)),
    }


def log_ingest(
    log: AuditLog, ids: list[int], *, tenant: str, tags: list[str] | None = None, actor: str | None = None
) -> AuditEntry:
    """An ingested batch: how many, which ids, whose, and its governance tags (never its text)."""
    details = {**_id_summary(ids), "tenant": tenant, "tags": sorted(set(tags or []))}
    return log.append("ingest", details, actor=actor)


def log_delete(
    log: AuditLog, ids: list[int], *, kind: str = "delete", actor: str | None = None, **extra: Any
) -> AuditEntry:
    """Removed entries (``kind`` "delete", "expire" or "rollback"), with ``extra`` details."""
    return log.append(kind, {**_id_summary(ids), "ids": sorted(ids)[:1000], **extra}, actor=actor)


def log_forget(log: AuditLog, *, tenant: str, removed: int, actor: str | None = None) -> AuditEntry:
    return log.append("forget", {"tenant": tenant, "count": removed}, actor=actor)


def log_train_update(
    log: AuditLog,
    *,
    run_id: str,
    config: Mapping[str, Any],
    data_ids: list[int],
    metrics: Mapping[str, float],
    decision: str,
    approver: str | None = None,
    actor: str | None = None,
    reasons: Sequence[str] = (),
    version: int | None = None,
) -> AuditEntry:
    """A training update: its run, config and data (as digests), its metrics, the gate's decision (with
    its reasons) and the version it became, if it was promoted."""
    details: dict[str, Any] = {
        "run_id": run_id,
        "config_hash": config_digest(config),
        "data_ids_hash": ids_digest(sorted(data_ids)),
        "data_count": len(data_ids),
        "metrics": dict(metrics),
        "decision": decision,
        "approver": approver,
        "reasons": list(reasons),
        "version": version,
    }
    return log.append("train-update", details, actor=actor)


class AuditedMemory:
    """A memory whose every mutation is followed by its audit entry; reads pass straight through.

    The entry is appended after the mutation has committed, so the log never records a change that did
    not happen; a crash between the two loses that one entry (closing this gap needs a hook in the
    memory's own transaction).
    """

    def __init__(self, memory: RehearsalMemory, log: AuditLog, *, actor: str | None = None) -> None:
        self.memory = memory
        self.log = log
        self.actor = actor

    def add(
        self,
        texts: Sequence[str] | None = None,
        *,
        metadata: Sequence[Mapping[str, Any]] | None = None,
        tenant: str | None = None,
        **kwargs: Any,
    ) -> list[int]:
        ids = self.memory.add(texts, metadata=metadata, tenant=tenant, **kwargs)
        tags = sorted({str(t) for meta in metadata or () for t in meta.get("tags", ())})
        log_ingest(self.log, ids, tenant=tenant or "default", tags=tags, actor=self.actor)
        return ids

    def delete(self, ids: Sequence[int]) -> int:
        removed = self.memory.delete(ids)
        log_delete(self.log, [int(i) for i in ids], actor=self.actor)
        return removed

    def forget(self, *, tenant: str) -> int:
        removed = self.memory.forget(tenant=tenant)
        log_forget(self.log, tenant=tenant, removed=removed, actor=self.actor)
        return removed

    def rotate_keys(self, new_keys: KeyRing) -> None:
        self.memory.rotate_keys(new_keys)
        self.log.rotate(new_keys, actor=self.actor)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.memory, name)
