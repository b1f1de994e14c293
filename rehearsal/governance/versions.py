"""Versions of a continually trained model and rollback of the model pointer and the memory together.

A version records the weights (a path: full model or adapter), the config digest, the memory's generation
and its id boundary (one past the largest id present). Ids are never reused and always grow, so the
entries added after a version are exactly those with ``id >= boundary``; rolling back deletes them (index,
catalog and vault together) and points ``current`` at the version's weights.

What rollback cannot undo: entries deleted, expired or forgotten since the version stay gone (erasure is
meant to be final). :func:`rollback` reports whether the memory's ids match the version's exactly. Given
the memory's audit log, it first checks the version's id boundary against the ``train-update`` entry that
recorded it (:class:`IntegrityError` on a disagreement, nothing deleted).

The versions file (``<memory>/versions.json``, plain or sealed) is read and written by
:mod:`rehearsal.governance.versions_file`; its names are re-exported here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rehearsal.errors import IntegrityError, NotFoundError, ValidationError
from rehearsal.governance.audit_log import canonical_json, ids_digest
from rehearsal.governance.audited import log_delete
from rehearsal.governance.versions_file import (
    VERSIONS_FILE,
    Version,
    VersionsFile,
    VersionsSeal,
    is_sealed,
    list_versions,
    load_for_change,
    read_versions,
    save_versions,
    set_staged,
    start_sealed,
    stored_version,
    stored_weights,
    typed_record,
    write_sealed,
)

if TYPE_CHECKING:
    from rehearsal.governance.audit_log import AuditEntry, AuditLog
    from rehearsal.memory.facade import RehearsalMemory

__all__ = [
    "VERSIONS_FILE",
    "RollbackResult",
    "Version",
    "VersionsFile",
    "VersionsSeal",
    "is_sealed",
    "list_versions",
    "read_versions",
    "record_version",
    "rollback",
    "set_staged",
    "start_sealed",
    "withdraw_update",
    "write_sealed",
]


@dataclasses.dataclass(frozen=True)
class RollbackResult:
    version: int
    removed: list[int]
    exact: bool  # False when entries present at the version have been erased since
    weights: str


def record_version(
    memory: RehearsalMemory,
    *,
    weights: str,
    config: Mapping[str, Any],
    log: AuditLog | None = None,
    run_id: str | None = None,
    update: str | None = None,
    seal: VersionsSeal | None = None,
) -> Version:
    """Record the memory's state with the weights of an update that just shipped; it becomes current."""
    if not isinstance(weights, str) or not weights:
        raise ValidationError(f"weights must be a non-empty path string, got {weights!r}")
    ids = memory.ids()
    data, sealing = load_for_change(memory.folder, seal)
    stored = stored_weights(memory.folder, weights, sealing is not None)
    number = 1 + max((typed_record(memory.folder, v)["version"] for v in data["versions"]), default=0)
    version = Version(
        version=number,
        created_at=time.time(),
        weights=weights,
        config_hash=hashlib.sha256(canonical_json(dict(config))).hexdigest()[:32],
        generation=memory.generation,
        id_boundary=(max(ids) + 1) if ids else 0,
        entries=len(ids),
        ids_hash=ids_digest(ids),
        update=update,
    )
    data["versions"] = [*data["versions"], {**dataclasses.asdict(version), "weights": stored}]
    data["current"] = number
    save_versions(memory.folder, data, sealing)
    if log is not None:
        details = {"version": number, "generation": version.generation, "config_hash": version.config_hash}
        details["id_boundary"] = version.id_boundary
        log.append("train-update", {**details, "run_id": run_id, "decision": "promoted"})
    return version


def _check_boundary(log: AuditLog, target: Version, later: list[int]) -> None:
    """IntegrityError unless the audit log agrees with ``target``'s id boundary: the ``train-update``
    entry that recorded the version names it (logs since this check), or, for an older entry, every
    entry the rollback would delete was ingested after it. A log that never recorded the version (a
    version recorded without one) cannot say."""
    entries = log.entries()
    at = next(
        (
            i
            for i in range(len(entries) - 1, -1, -1)
            if entries[i].kind == "train-update" and entries[i].details.get("version") == target.version
        ),
        None,
    )
    if at is None:
        return
    logged = entries[at].details.get("id_boundary")
    if logged is not None:
        if logged != target.id_boundary:
            raise IntegrityError(
                f"version {target.version}'s id boundary {target.id_boundary} disagrees with the audit log "
                f"({logged}): its record was altered; nothing was rolled back"
            )
        return
    if not later or any(e.kind == "baseline" for e in entries[at + 1 :]):
        return  # nothing to delete, or a log that first saw the memory after the version: it cannot say
    ranges = [_added(e) for e in entries[at + 1 :]]
    stray = [i for i in later if not any(lo is not None and lo <= i <= hi for lo, hi in ranges)]
    if stray:
        raise IntegrityError(
            f"version {target.version}'s id boundary {target.id_boundary} would delete {len(stray)} entries "
            f"the audit log does not show added after it (first id {stray[0]}): its record was altered; "
            "nothing was rolled back"
        )


def _added(entry: AuditEntry) -> tuple[int | None, int]:
    """The id range an entry says was added (ingest, reconcile); (None, 0) for other entries."""
    d = entry.details
    summary = d if entry.kind == "ingest" else d.get("added") if entry.kind == "reconcile" else None
    if not isinstance(summary, dict):
        return None, 0
    lo, hi = summary.get("first_id"), summary.get("last_id")
    return (lo, hi) if isinstance(lo, int) and isinstance(hi, int) else (None, 0)


def rollback(
    memory: RehearsalMemory,
    version: int,
    *,
    log: AuditLog | None = None,
    actor: str | None = None,
    seal: VersionsSeal | None = None,
) -> RollbackResult:
    """Delete the entries added after ``version`` and make it current again."""
    data, sealing = load_for_change(memory.folder, seal)
    records = [stored_version(memory.folder, v, sealing is not None) for v in data["versions"]]
    found = [v for v in records if v.version == version]
    if not found:
        known = [v.version for v in records]
        raise NotFoundError(f"no version {version!r} in {str(memory.path)!r}; known versions: {known}")
    target = found[0]
    if target.withdrawn:
        raise NotFoundError(f"version {version} was withdrawn (its run never acknowledged it)")
    later = memory.ids({"id": {"$gte": target.id_boundary}})
    if log is not None:
        _check_boundary(log, target, later)
    if later:
        memory.delete(later)
    exact = ids_digest(memory.ids()) == target.ids_hash
    data["current"] = target.version
    save_versions(memory.folder, data, sealing)
    if log is not None:
        log_delete(
            log,
            later,
            kind="rollback",
            actor=actor,
            generation=memory.generation,
            version=target.version,
            exact=exact,
        )
    return RollbackResult(target.version, later, exact, target.weights)


def withdraw_update(
    memory_path: str | Path,
    update: str,
    *,
    log: AuditLog | None = None,
    actor: str | None = None,
    seal: VersionsSeal | None = None,
) -> Version | None:
    """Withdraw the version an interrupted run recorded for ``update`` before it could save its own state
    (the resumed run trains that phase again and records a new version). The record stays, marked
    withdrawn, so version numbers are never reused; the previous live version becomes current."""
    folder = Path(memory_path)
    data, sealing = load_for_change(folder, seal)
    typed = [typed_record(folder, v) for v in data["versions"]]
    found = [i for i, v in enumerate(typed) if v["update"] == update and not v["withdrawn"]]
    if not found:
        return None
    data["versions"] = [{**v, "withdrawn": True} if i in found else v for i, v in enumerate(data["versions"])]
    numbers = {typed[i]["version"] for i in found}
    if data.get("current") in numbers:
        # Only a pointer at a withdrawn version moves; a rollback made since stays where it was put.
        live = [v["version"] for v in typed if v["version"] not in numbers and not v["withdrawn"]]
        data["current"] = max(live) if live else None
    save_versions(folder, data, sealing)
    if log is not None:
        details = {"update": update, "versions": sorted(numbers), "current": data["current"]}
        log.append("withdraw", details, actor=actor)
    return stored_version(folder, data["versions"][found[-1]], sealing is not None)
