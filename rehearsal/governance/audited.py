"""Audit entries for memory mutations and training updates, and a memory wrapper that writes them.

Details are summaries (counts, id ranges, digests, tenants, tags, metrics), never texts: see
:func:`rehearsal.governance.audit_log.check_details`.
"""

from __future__ import annotations

import collections
import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from rehearsal.errors import CleanupError, ConfigError, IntegrityError, RehearsalError
from rehearsal.governance.audit_log import AuditEntry, AuditLog, canonical_json, check_details, ids_digest

if TYPE_CHECKING:
    from rehearsal.crypto.keys import KeyRing
    from rehearsal.memory.facade import RehearsalMemory

T = TypeVar("T")

# How audit entries name tenants: a keyed pseudonym (the default: tenant names can identify people), or
# the name itself.
TENANT_NAMES = ("digest", "clear")

__all__ = [
    "TENANT_NAMES",
    "AuditedMemory",
    "bound_store_id",
    "check_log_binding",
    "config_digest",
    "last_audited_generation",
    "log_delete",
    "log_forget",
    "log_ingest",
    "log_train_update",
    "reconcile_log",
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
    log: AuditLog,
    ids: list[int],
    *,
    tenant: str | Sequence[str],
    tags: list[str] | None = None,
    actor: str | None = None,
    generation: int | None = None,
) -> AuditEntry:
    """An ingested batch: how many, which ids, whose, and its governance tags (never its text).

    ``tenant`` is the batch's one owner, or one per record; a batch of several tenants is one entry whose
    ``tenants`` counts each one's records. ``generation`` (here and below) is the memory's generation
    once the mutation committed: it lets :meth:`AuditedMemory.reconcile` find mutations that committed
    without their entry."""
    details = {**_id_summary(ids), **_owners(tenant), "tags": sorted(set(tags or []))}
    return log.append("ingest", {**details, "generation": generation}, actor=actor)


def _owners(tenant: str | Sequence[str] | None, name: Callable[[str], str] = str) -> dict[str, Any]:
    """``{"tenant": name}`` for one owner, ``{"tenants": {name: records}}`` for several; ``name`` is how
    a tenant is written (itself, or its pseudonym)."""
    if tenant is None or isinstance(tenant, str):
        return {"tenant": name(tenant or "default")}
    counts = collections.Counter(tenant)
    if len(counts) == 1:
        return {"tenant": name(next(iter(counts)))}
    return {"tenants": {name(t): n for t, n in sorted(counts.items())}}


def log_delete(
    log: AuditLog,
    ids: list[int],
    *,
    kind: str = "delete",
    actor: str | None = None,
    generation: int | None = None,
    **extra: Any,
) -> AuditEntry:
    """Removed entries (``kind`` "delete", "expire" or "rollback"), with ``extra`` details."""
    details = {**_id_summary(ids), "ids": sorted(ids)[:1000], "generation": generation, **extra}
    return log.append(kind, details, actor=actor)


def log_forget(
    log: AuditLog, *, tenant: str, removed: int, actor: str | None = None, generation: int | None = None
) -> AuditEntry:
    return log.append("forget", {"tenant": tenant, "count": removed, "generation": generation}, actor=actor)


def last_audited_generation(log: AuditLog) -> int | None:
    """The memory generation the latest generation-stamped entry recorded (None if there is none)."""
    return _latest(log.entries(), "generation", int)


def bound_store_id(log: AuditLog) -> str | None:
    """The store id the log is bound to: the latest one an entry recorded (None for a log written before
    logs were bound; :meth:`AuditedMemory.reconcile` binds such a log on its next audited open)."""
    return _latest(log.entries(), "store_id", str)


def _latest(entries: list[AuditEntry], field: str, kind: type[T]) -> T | None:
    for entry in reversed(entries):
        value = entry.details.get(field)
        if isinstance(value, kind) and not isinstance(value, bool):
            return value
    return None


def check_log_binding(log: AuditLog, memory: RehearsalMemory, *, in_step: bool) -> list[AuditEntry]:
    """The log's verified entries, once they are known to belong to ``memory``: IntegrityError if the log
    is bound to another store, or records a generation the memory has not reached (a memory restored
    from an older copy). ``in_step`` also refuses a log that stops short of the memory's generation (an
    older copy of the log, or mutations made without it), which :meth:`AuditedMemory.reconcile` would
    otherwise log as a ``reconcile`` entry."""
    entries = log.entries()
    bound = _latest(entries, "store_id", str)
    if bound is not None and bound != memory.store_id:
        raise IntegrityError(
            f"audit log {log.path.name} belongs to store {bound}, not to this memory ({memory.store_id})"
        )
    last, now = _latest(entries, "generation", int), memory.generation
    if last is not None and now < last:
        raise IntegrityError(
            f"the memory is at generation {now} but its audit log recorded generation {last}: "
            "it was replaced by an older copy"
        )
    if in_step and last is not None and last < now:
        raise IntegrityError(
            f"audit log {log.path.name} stops at generation {last} but the memory is at {now}: an older "
            "copy of the log, or mutations made without it"
        )
    return entries


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
    staging: Mapping[str, Mapping[str, float]] | None = None,
    data_digest: str | None = None,
    live: Mapping[str, Mapping[str, float]] | None = None,
    id_boundary: int | None = None,
) -> AuditEntry:
    """A training update: its run, config and data (as digests), its metrics, the gate's decision (with
    its reasons), the staging numbers (and a shadow's or canary's, ``live``) and the version it became,
    if it was promoted (with its id boundary)."""
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
        "staging": None if staging is None else {task: dict(row) for task, row in staging.items()},
        "data_digest": data_digest,
    }
    if live is not None:
        details["live"] = {part: dict(row) for part, row in live.items()}
    if id_boundary is not None:  # what rollback checks the version's record against
        details["id_boundary"] = id_boundary
    return log.append("train-update", details, actor=actor)


def reconcile_log(memory: RehearsalMemory, log: AuditLog, *, actor: str | None) -> AuditEntry | None:
    """Log what ``memory`` committed beyond ``log``'s last audited generation; None if nothing.

    A log that has never seen this memory gets a ``baseline`` entry (its generation, ids and store id)
    first; so does a log written before logs recorded their store, which binds it from then on.
    A log bound to another store, or a memory *behind* its log (restored from an older copy), is an
    :class:`IntegrityError` (see :func:`check_log_binding`). Every audited write starts here, so the log
    never misses a change that committed while no audited handle was open.
    """
    entries = check_log_binding(log, memory, in_step=False)
    now = memory.generation
    last = _latest(entries, "generation", int)
    bound = _latest(entries, "store_id", str) is not None
    # A new log, or one written before logs recorded their store: its next entry binds it.
    if last is None or (last == now and not bound):
        details = {**_id_summary(memory.ids()), "generation": now, "store_id": memory.store_id}
        return log.append("baseline", details, actor=actor)
    if last == now:
        return None
    added, removed = memory.changes_since(last)
    details = {
        "store_id": memory.store_id,
        "from_generation": last,
        "generation": now,
        "added": _id_summary(added),
        "removed": _id_summary(removed),
    }
    return log.append("reconcile", details, actor=actor)


class AuditedMemory:
    """A memory whose every mutation is followed by its audit entry; reads pass straight through.

    The entry is appended after the mutation has committed, so the log never records a change that did
    not happen. A crash between the two would lose that entry, so each entry carries the memory's
    generation and opening an ``AuditedMemory`` reconciles first (:func:`reconcile_log`): what committed
    after the last audited generation is logged then, as a ``reconcile`` entry with its ids.
    """

    def __init__(
        self,
        memory: RehearsalMemory,
        log: AuditLog,
        *,
        actor: str | None = None,
        tenant_names: str = "digest",
    ) -> None:
        """``tenant_names`` is how entries name tenants: ``"digest"`` (the log's keyed pseudonym, for
        tenant names that identify people) or ``"clear"``."""
        if tenant_names not in TENANT_NAMES:
            raise ConfigError(f"tenant_names must be one of {list(TENANT_NAMES)}, got {tenant_names!r}")
        self.memory = memory
        self.log = log
        self.actor = actor
        self.tenant_names = tenant_names
        self.last_forget: AuditEntry | None = None  # the entry of the latest forget through this handle
        self.reconcile()

    def tenant_ref(self, tenant: str) -> str:
        """How this log's entries name ``tenant``."""
        return self.log.pseudonym(tenant) if self.tenant_names == "digest" else tenant

    def forgotten_before(self, tenant: str) -> AuditEntry | None:
        """The latest ``forget`` entry of ``tenant`` (by name or by pseudonym), None if it has none."""
        names = {tenant, self.log.pseudonym(tenant)}
        erasures = [e for e in self.log.entries() if e.kind == "forget" and e.details.get("tenant") in names]
        return erasures[-1] if erasures else None

    def __enter__(self) -> AuditedMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.memory.close()

    def __len__(self) -> int:
        return len(self.memory)

    def reconcile(self) -> AuditEntry | None:
        """Log what the memory committed beyond the log's last audited generation (:func:`reconcile_log`)."""
        return reconcile_log(self.memory, self.log, actor=self.actor)

    def add(
        self,
        texts: Sequence[str] | None = None,
        *,
        metadata: Sequence[Mapping[str, Any]] | None = None,
        tenant: str | Sequence[str] | None = None,
        **kwargs: Any,
    ) -> list[int]:
        tags = sorted({str(t) for meta in metadata or () for t in meta.get("tags", ())})
        check_details({**_owners(tenant), "tags": tags})  # refuse before anything is written
        ids = self.memory.add(texts, metadata=metadata, tenant=tenant, **kwargs)
        self._log_ingest(ids, tenant, tags)
        return ids

    def _log_ingest(self, ids: list[int], tenant: str | Sequence[str] | None, tags: list[str]) -> None:
        details = {**_id_summary(ids), **_owners(tenant, self.tenant_ref), "tags": tags}
        self.log.append("ingest", {**details, "generation": self.memory.generation}, actor=self.actor)

    def upsert(
        self,
        texts: Sequence[str] | None = None,
        *,
        key: str,
        metadata: Sequence[Mapping[str, Any]],
        tenant: str | Sequence[str] | None = None,
        **kwargs: Any,
    ) -> tuple[list[int], list[int]]:
        tags = sorted({str(t) for meta in metadata for t in meta.get("tags", ())})
        check_details({**_owners(tenant), "tags": tags})  # refuse before anything is written
        ids, replaced = self.memory.upsert(texts, key=key, metadata=metadata, tenant=tenant, **kwargs)
        generation = self.memory.generation
        if replaced:
            log_delete(self.log, replaced, actor=self.actor, generation=generation, cause="upsert")
        self._log_ingest(ids, tenant, tags)
        return ids, replaced

    def delete(self, ids: Sequence[int]) -> int:
        removed = self.memory.delete(ids)
        if not removed:
            return 0  # nothing was deleted: nothing to log
        log_delete(self.log, [int(i) for i in ids], actor=self.actor, generation=self.memory.generation)
        return removed

    def forget(self, *, tenant: str) -> int:
        removed = self.memory.forget(tenant=tenant)
        self.last_forget = log_forget(
            self.log,
            tenant=self.tenant_ref(tenant),
            removed=removed,
            actor=self.actor,
            generation=self.memory.generation,
        )
        return removed

    def rotate_keys(self, new_keys: KeyRing) -> None:
        """Rotate the memory's key, then the log's. A cleanup that fails after the memory's commit
        (:class:`CleanupError`) is raised only once the log is rotated too, so the log's head is under
        the key that now opens the memory."""
        try:
            self.memory.rotate_keys(new_keys)
        except CleanupError:
            self._rotate_log(new_keys)
            raise
        self._rotate_log(new_keys)

    def _rotate_log(self, new_keys: KeyRing) -> None:
        """The log follows a memory whose rotation committed: a failure here is a cleanup's, not the
        rotation's (``rehearsal rotate-key`` run again with both keys finishes the log)."""
        try:
            self.log.rotate(new_keys, actor=self.actor)
        except (OSError, RehearsalError) as exc:
            raise CleanupError(
                f"rotated; cleanup failed: the memory's key is now {new_keys.fingerprint}, but its audit log "
                f"could not follow ({exc}); run rotate-key again with the same keys to finish it"
            ) from exc

    def __getattr__(self, name: str) -> Any:
        return getattr(self.memory, name)
