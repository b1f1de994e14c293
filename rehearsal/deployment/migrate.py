"""Binding a deployment made before identities (format 2) to one: ``rehearsal migrate-deployment DIR``.

A format-2 deployment sealed its config, its weights folders and its staged candidate under its key, but
named no identity in them, and its ``versions.json`` was plain: anyone who could write the folder could
point a version at other weights or move its id boundary. Migration checks what it can under the old
rules, then binds:

1. ``deployment.json``'s tag (format 2);
2. each version record against the audit log's ``train-update`` entry that recorded it (same update, same
   config digest, same id boundary where the entry has one) and its weights: the folder of its own update
   in ``DIR/weights``, sealed under the key (format-1 seal), its ``state.json`` naming that update.
   Records of the source run a deployment was made from (weights outside ``DIR/weights``) are dropped:
   they were never the deployment's;
3. the staged candidate's tag and weights, if one is staged;

then re-seals the weights folders and ``pending.json`` for the identity, writes the sealed versions file
and, last, ``deployment.json`` (format 3). The identity is derived from the old config tag, so a
migration cut short binds to the same identity when it runs again (until ``deployment.json`` is written
the deployment stays format 2; the files already bound are accepted in their new form).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path
from typing import Any

from rehearsal._files import write_json
from rehearsal.crypto.keys import KeyRing, same_tag
from rehearsal.deployment.config import DeploymentConfig
from rehearsal.deployment.folder import (
    DEPLOYMENT_FILE,
    FORMAT,
    PENDING_FILE,
    UNBOUND_FORMAT,
    Deployment,
    VersionState,
    check_config,
    pending_tag,
    read_json,
    sealed_pending,
    write_config,
)
from rehearsal.deployment.seal import is_unbound, seal_weights, verify_weights
from rehearsal.errors import IntegrityError, StoreFormatError
from rehearsal.governance.audit_log import AuditEntry, AuditLog, default_log_path
from rehearsal.governance.versions import Version, is_sealed, read_versions, write_sealed

__all__ = ["migrate_deployment"]

_IDENTITY_PURPOSE = "deployment-migration-identity"


def migrate_deployment(path: str | os.PathLike[str], *, keys: KeyRing) -> dict[str, Any]:
    """Check and bind the format-2 deployment in ``path`` (see the module docstring); a deployment
    already bound is only opened (checked). Returns what was done."""
    folder = Path(path)
    where = repr(str(folder / DEPLOYMENT_FILE))
    data = read_json(folder / DEPLOYMENT_FILE, "deployment file")
    fmt = data.get("format") if isinstance(data, dict) else None
    if fmt == FORMAT:
        dep = Deployment.open(folder, keys)
        return {"path": str(folder), "id": dep.id, "migrated": False, "versions": len(dep.own_versions())}
    if not isinstance(data, dict) or fmt != UNBOUND_FORMAT:
        raise StoreFormatError(f"{where} is not a deployment this rehearsal migrates ({UNBOUND_FORMAT!r})")
    check_config(data, keys, where)
    key = keys.derive_key(_IDENTITY_PURPOSE)
    identity = hmac.new(key, str(data["tag"]).encode(), hashlib.sha256).hexdigest()[:32]
    dep = Deployment(folder, DeploymentConfig.from_dict(data["config"]), keys, identity)
    log = AuditLog.open(default_log_path(dep.memory_path), keys, create=False)
    if is_sealed(dep.memory_path):  # a migration cut short after it wrote the versions file
        found = read_versions(dep.memory_path, seal=dep.versions_seal)
        versions, current, dropped = found.versions, found.current, []
    else:
        found = read_versions(dep.memory_path)
        versions = [v for v in found.versions if _inside(dep, v)]
        dropped = [v.version for v in found.versions if not _inside(dep, v)]
        current = found.current
        _check_records(dep, versions, current, log.entries())
    for version in versions:
        if not version.withdrawn:
            _bind_weights(dep, Path(version.weights))
    staged = _bind_pending(dep)
    write_sealed(dep.memory_path, dep.versions_seal, versions, current, staged)
    write_config(folder, dep.config, keys, identity)
    Deployment.open(folder, keys)  # what was written opens
    return {
        "path": str(folder),
        "id": identity,
        "migrated": True,
        "versions": len(versions),
        "dropped": dropped,
        "staged": None if staged is None else staged["update"],
    }


def _inside(dep: Deployment, version: Version) -> bool:
    try:
        dep.inside_weights(version.weights)
    except IntegrityError:
        return False
    return True


def _check_records(
    dep: Deployment, versions: list[Version], current: int | None, log: list[AuditEntry]
) -> None:
    """IntegrityError unless every live record is the one the audit log recorded and names its own
    update's weights, and ``current`` is one of them."""
    for version in versions:
        if version.withdrawn:
            continue
        what = f"version {version.version} in versions.json"
        entry = next(
            (
                e
                for e in reversed(log)
                if e.kind == "train-update" and e.details.get("version") == version.version
            ),
            None,
        )
        if entry is None:
            raise IntegrityError(f"{what} was never recorded in the audit log: it was added by hand")
        d = entry.details
        bound = d.get("id_boundary")
        same = d.get("run_id") == version.update and d.get("config_hash") == version.config_hash
        if not same or (bound is not None and bound != version.id_boundary):
            raise IntegrityError(
                f"{what} disagrees with the audit log entry that recorded it: it was altered"
            )
        if (
            version.update is None
            or dep.inside_weights(version.weights) != dep.weights_dir(version.update).resolve()
        ):
            raise IntegrityError(f"{what} names weights that are not its own update's: it was altered")
    live = {v.version for v in versions if not v.withdrawn}
    if current is not None and current not in live:
        raise IntegrityError(f"versions.json names v{current} current, which is not a live version of it")


def _bind_weights(dep: Deployment, folder: Path) -> None:
    """Check ``folder``'s format-1 seal (or its new one, bound already) and re-seal it for ``dep``."""
    folder = dep.inside_weights(folder)
    if not is_unbound(folder):
        verify_weights(folder, dep.keys, deployment=dep.id)
        return
    verify_weights(folder, dep.keys, deployment=dep.id, unbound=True)
    state = VersionState.load(folder)
    if dep.weights_dir(state.update).resolve() != folder:
        raise IntegrityError(f"weights folder {str(folder)!r} holds the state of {state.update!r}")
    seal_weights(folder, dep.keys, deployment=dep.id)


def _bind_pending(dep: Deployment) -> dict[str, Any] | None:
    """The staged candidate, checked under the old tag (or the new one) and re-tagged; its marker."""
    path = dep.path / PENDING_FILE
    if not path.is_file():
        return None
    parts = sealed_pending(path)
    if parts is None:
        raise IntegrityError(f"staged candidate {str(path)!r} is not sealed: roll back before migrating")
    body, tag = parts
    bound = pending_tag(dep.keys, dep.id, body)
    if not (same_tag(tag, bound) or same_tag(tag, pending_tag(dep.keys, None, body))):
        raise IntegrityError(f"staged candidate {str(path)!r} fails its check: it was altered")
    _bind_weights(dep, dep.inside_weights(str(body.get("weights"))))  # re-tagged as it is, read later
    write_json(path, {"pending": body, "tag": bound})
    return {"update": body.get("update"), "tag": bound}
