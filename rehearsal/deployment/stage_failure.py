"""A staged candidate that the gate already fails is not kept: ``update --stage`` stages only what could
pass (issue 29). The candidate's entries leave the memory (logged), its held-out examples the suite, its
weights the folder, and the error says why and what to try.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from typing import Any

from rehearsal.deployment.folder import Deployment
from rehearsal.deployment.strategies import get_deployment_strategy
from rehearsal.errors import UpdateBlockedError
from rehearsal.governance.audit_log import AuditLog
from rehearsal.governance.audited import log_delete
from rehearsal.memory.facade import RehearsalMemory

__all__ = ["discard_failed_stage"]


def discard_failed_stage(
    dep: Deployment,
    memory: RehearsalMemory,
    suite: RehearsalMemory,
    log: AuditLog,
    *,
    uid: str,
    preview: dict[str, Any],
    generation_before: int,
    suite_ids: list[int],
    new_labels: Sequence[str],
) -> UpdateBlockedError:
    """Undo the staging of ``uid`` and return the error to raise: the gate's codes and, when the batch
    brought labels the deployment had not seen and its strategy shares one adapter, the strategy made for
    new labels."""
    added, _ = memory.changes_since(generation_before)
    if added:
        memory.delete(added)
        log_delete(log, added, actor="deployment", generation=memory.generation, cause="staging-failed")
    if suite_ids:
        suite.delete(suite_ids)
    dep.set_pending(None)
    shutil.rmtree(dep.weights_dir(uid), ignore_errors=True)
    codes = list(preview.get("codes", []))
    message = f"the candidate fails the gate already ({', '.join(codes) or 'fail'}), so it was not staged"
    if new_labels and get_deployment_strategy(dep.config.strategy).new_labels_share_old_weights:
        message += (
            f"; the batch brings {len(new_labels)} label(s) this deployment has not seen, which the "
            f"'{dep.config.strategy}' strategy trains into the adapter the old tasks share: try a deployment "
            "that grows an expert for them (rehearsal init-deployment NEW_DIR --memory MEMORY "
            "--strategy expert-growth)"
        )
    else:
        message += "; try more examples per label, or more epochs (init-deployment --config)"
    return UpdateBlockedError(message, decision="fail", reasons=codes, update=uid, codes=codes)
