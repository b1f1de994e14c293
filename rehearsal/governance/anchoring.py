"""Anchoring a memory and its audit log outside their folder (see :mod:`rehearsal.memory.anchor`).

``rehearsal audit anchor PATH --out FILE`` records where the memory and its log stand; ``rehearsal audit
verify PATH --anchor FILE`` then also refuses a log that no longer holds the anchored entry as it was (a
log put back from an older copy, or rewritten from that entry on), beside the memory's own check.
"""

from __future__ import annotations

from rehearsal.errors import IntegrityError
from rehearsal.governance.audit_log import AuditLog
from rehearsal.memory.anchor import Anchor
from rehearsal.memory.facade import RehearsalMemory

__all__ = ["anchor_of", "check_log_anchor"]


def anchor_of(memory: RehearsalMemory, log: AuditLog | None) -> Anchor:
    """Where ``memory`` and its ``log`` (verified; None: the memory keeps none) stand now."""
    entries = log.entries() if log is not None else []
    last = entries[-1] if entries else None
    return Anchor(
        store_id=memory.store_id,
        generation=memory.generation,
        audit_seq=last.seq if last is not None else None,
        audit_digest=last.digest if last is not None else None,
    )


def check_log_anchor(anchor: Anchor, log: AuditLog) -> None:
    """IntegrityError unless ``log`` (verified) still holds the entry ``anchor`` recorded, unchanged."""
    if anchor.audit_seq is None:
        return
    entries = log.entries()
    found = next((entry for entry in entries if entry.seq == anchor.audit_seq), None)
    if found is None:
        last = entries[-1].seq if entries else "none"
        raise IntegrityError(
            f"the audit log ends at entry {last}, before its anchor's entry {anchor.audit_seq}: it was"
            " rolled back (put back from an older copy)"
        )
    if found.digest != anchor.audit_digest:
        raise IntegrityError(
            f"audit entry {anchor.audit_seq} is not the one the anchor recorded: the log was rewritten from"
            " there"
        )
