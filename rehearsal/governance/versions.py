"""Versions of a continually trained model and rollback of the model pointer and the memory together.

A version records the weights (a path: full model or adapter), the config digest, the memory's generation
and its id boundary (one past the largest id present). Ids are never reused and always grow, so the
entries added after a version are exactly those with ``id >= boundary``; rolling back deletes them (index,
catalog and vault together) and points ``current`` at the version's weights.

What rollback cannot undo: entries deleted, expired or forgotten since the version stay gone (erasure is
meant to be final). :func:`rollback` reports whether the memory's ids match the version's exactly.

The versions file, ``<memory>/versions.json``, is rewritten atomically.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rehearsal._files import atomic_write
from rehearsal.errors import NotFoundError, StoreFormatError, ValidationError
from rehearsal.governance.audit_log import canonical_json, ids_digest
from rehearsal.governance.audited import log_delete

if TYPE_CHECKING:
    from rehearsal.governance.audit_log import AuditLog
    from rehearsal.memory.facade import RehearsalMemory

__all__ = [
    "VERSIONS_FILE",
    "RollbackResult",
    "Version",
    "list_versions",
    "record_version",
    "rollback",
    "withdraw_update",
]

VERSIONS_FILE = "versions.json"


@dataclasses.dataclass(frozen=True)
class Version:
    version: int
    created_at: float
    weights: str
    config_hash: str
    generation: int
    id_boundary: int
    entries: int
    ids_hash: str
    update: str | None = None  # the run update that produced it (rehearsal.governance.updates.update_id)
    withdrawn: bool = False  # recorded, but the run that recorded it never acknowledged it (a crash)


@dataclasses.dataclass(frozen=True)
class RollbackResult:
    version: int
    removed: list[int]
    exact: bool  # False when entries present at the version have been erased since
    weights: str


def _load(folder: Path) -> dict[str, Any]:
    path = folder / VERSIONS_FILE
    if not path.is_file():
        return {"current": None, "versions": []}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise StoreFormatError(f"{VERSIONS_FILE} in {str(folder)!r} is not valid JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("versions"), list):
        raise StoreFormatError(f"{VERSIONS_FILE} in {str(folder)!r} has no 'versions' list")
    return data


def _save(folder: Path, data: Mapping[str, Any]) -> None:
    atomic_write(folder / VERSIONS_FILE, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def _version(folder: Path, raw: Mapping[str, Any]) -> Version:
    """A stored version with its weights path made absolute (stored relative to the memory folder since
    the run-folder layout may move; older records hold absolute paths)."""
    weights = Path(raw["weights"])
    resolved = weights if weights.is_absolute() else (Path(folder).resolve() / weights).resolve()
    return Version(**{**raw, "weights": str(resolved)})


def list_versions(memory_path: str | Path) -> tuple[list[Version], int | None]:
    """The recorded versions, oldest first, and the current one's number (None before any)."""
    data = _load(Path(memory_path))
    return [_version(Path(memory_path), v) for v in data["versions"]], data.get("current")


def record_version(
    memory: RehearsalMemory,
    *,
    weights: str,
    config: Mapping[str, Any],
    log: AuditLog | None = None,
    run_id: str | None = None,
    update: str | None = None,
) -> Version:
    """Record the memory's state with the weights of an update that just shipped; it becomes current."""
    if not isinstance(weights, str) or not weights:
        raise ValidationError(f"weights must be a non-empty path string, got {weights!r}")
    ids = memory.ids()
    data = _load(memory.folder)
    number = 1 + max((v["version"] for v in data["versions"]), default=0)
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
    # Stored relative to the memory folder, so a run folder that moves (memory and weights together) can
    # still roll back; Version objects always carry the resolved path.
    stored = os.path.relpath(Path(weights).resolve(), Path(memory.path).resolve())
    data["versions"].append({**dataclasses.asdict(version), "weights": stored})
    data["current"] = number
    _save(memory.folder, data)
    if log is not None:
        details = {"version": number, "generation": version.generation, "config_hash": version.config_hash}
        log.append("train-update", {**details, "run_id": run_id, "decision": "promoted"})
    return version


def rollback(
    memory: RehearsalMemory, version: int, *, log: AuditLog | None = None, actor: str | None = None
) -> RollbackResult:
    """Delete the entries added after ``version`` and make it current again."""
    data = _load(memory.folder)
    found = [v for v in data["versions"] if v["version"] == version]
    if not found:
        known = [v["version"] for v in data["versions"]]
        raise NotFoundError(f"no version {version!r} in {str(memory.path)!r}; known versions: {known}")
    target = _version(memory.folder, found[0])
    if target.withdrawn:
        raise NotFoundError(f"version {version} was withdrawn (its run never acknowledged it)")
    later = memory.ids({"id": {"$gte": target.id_boundary}})
    if later:
        memory.delete(later)
    exact = ids_digest(memory.ids()) == target.ids_hash
    data["current"] = target.version
    _save(memory.folder, data)
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
    memory_path: str | Path, update: str, *, log: AuditLog | None = None, actor: str | None = None
) -> Version | None:
    """Withdraw the version an interrupted run recorded for ``update`` before it could save its own state
    (the resumed run trains that phase again and records a new version). The record stays, marked
    withdrawn, so version numbers are never reused; the previous live version becomes current."""
    folder = Path(memory_path)
    data = _load(folder)
    found = [v for v in data["versions"] if v.get("update") == update and not v.get("withdrawn")]
    if not found:
        return None
    for record in found:
        record["withdrawn"] = True
    if data.get("current") in {v["version"] for v in found}:
        # Only a pointer at a withdrawn version moves; a rollback made since stays where it was put.
        live = [v["version"] for v in data["versions"] if not v.get("withdrawn")]
        data["current"] = max(live) if live else None
    _save(folder, data)
    if log is not None:
        details = {"update": update, "versions": [v["version"] for v in found], "current": data["current"]}
        log.append("withdraw", details, actor=actor)
    return _version(Path(memory_path), found[-1])
