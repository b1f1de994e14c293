"""Rolling a deployment back to one of its versions (``rehearsal rollback DEPLOYMENT VERSION``)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from rehearsal.crypto.keys import KeyRing
from rehearsal.deployment.folder import Deployment
from rehearsal.deployment.result import deployment_keys
from rehearsal.errors import IntegrityError, ValidationError
from rehearsal.governance.audited import reconcile_log
from rehearsal.governance.versions import rollback as rollback_memory

__all__ = ["rollback"]


def rollback(path: str | os.PathLike[str], version: int, *, keys: KeyRing | None = None) -> dict[str, Any]:
    """Make ``version`` current again: the memory loses the entries added since (logged), the suite its
    later held-out examples, and a staged candidate is discarded."""
    dep = Deployment.open(path, deployment_keys(keys))
    # Only the target's seal is checked: a damaged other version must not stop a rollback away from it.
    found = [v for v in dep.own_versions() if v.version == version]
    if not found:
        raise ValidationError(
            f"version {version} is not a version of this deployment (see 'rehearsal versions')"
        )
    target = dep.load_state(Path(found[0].weights))
    try:
        pending = dep.pending()
    except IntegrityError:
        # A staged file that fails its check is dropped unread: its weights path is not trusted either.
        dep.set_pending(None)
        pending = None
    with dep.open_memory() as memory, dep.open_suite() as suite:
        log = dep.log()
        reconcile_log(memory, log, actor="deployment")  # what committed unaudited is logged first
        result = rollback_memory(memory, version, log=log, actor="deployment", seal=dep.versions_seal)
        later = suite.ids({"id": {"$gte": target.suite_boundary}})
        if later:
            suite.delete(later)
    if pending is not None:
        shutil.rmtree(dep.candidate_weights(pending), ignore_errors=True)
        dep.set_pending(None)
    return {
        "version": result.version,
        "removed": len(result.removed),
        "exact": result.exact,
        "suite_removed": len(later),
        "discarded": None if pending is None else pending.update,
    }
