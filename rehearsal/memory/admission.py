"""Which residents a write evicts: those an admission policy chooses (and which of the batch it admits),
the entries an upsert replaces, the ids a delete names.

The facade commits the decision: evictions, additions and the policy's state (e.g. the reservoir's count
of items seen) go into one durable transaction, so a crash never leaves them out of step.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rehearsal.errors import NotFoundError
from rehearsal.memory.batch import Batch, external_ids
from rehearsal.memory.policies import AdmissionPolicy, EntryInfo
from rehearsal.store.protocols import RecordStore
from rehearsal.store.types import EntryRow

__all__ = [
    "Admission",
    "admit_batch",
    "check_present",
    "decide_admission",
    "policy_state_key",
    "replaced_ids",
]


@dataclass(frozen=True)
class Admission:
    keep: list[int]  # positions in the offered batch
    evict: list[int]  # ids of residents
    state: dict[str, str]  # the policy's state, to be saved with the commit


def _label(value: Any) -> str | None:
    return None if value is None else str(value)


def policy_state_key(policy: AdmissionPolicy) -> str:
    return f"policy.{policy.name}"


def decide_admission(
    policy: AdmissionPolicy,
    metadata: Sequence[Mapping[str, Any]],
    residents: Iterable[EntryRow],
    saved_state: str | None,
    *,
    rng: np.random.Generator,
) -> Admission:
    """Restore ``policy`` from ``saved_state`` and let it decide on the batch described by ``metadata``."""
    if saved_state is not None:
        policy.load_state_dict(json.loads(saved_state))
    current = [EntryInfo(id=row.id, label=_label(row.label), tags=frozenset(row.tags)) for row in residents]
    incoming = [
        EntryInfo(id=pos, label=_label(meta.get("label")), tags=frozenset(meta.get("tags", ())))
        for pos, meta in enumerate(metadata)
    ]
    decision = policy.decide(incoming, current, rng=rng)
    state = {policy_state_key(policy): json.dumps(policy.state_dict())}
    return Admission(keep=list(decision.admit), evict=list(decision.evict), state=state)


def admit_batch(
    records: RecordStore, policy: AdmissionPolicy, batch: Batch, *, rng: np.random.Generator
) -> tuple[Batch | None, Admission]:
    """(the part of ``batch`` the policy admits, or None; its decision) against the current residents."""
    saved = records.get_meta(policy_state_key(policy))
    decision = decide_admission(policy, batch.metadata, records.all_rows(), saved, rng=rng)
    return (batch.subset(decision.keep) if decision.keep else None), decision


def replaced_ids(records: RecordStore, key: str, batch: Batch) -> list[int]:
    """The entries an upsert of ``batch`` replaces: each tenant's own entries with the batch's external ids
    (``metadata[key]``)."""
    values = external_ids(key, batch.metadata, batch.tenants)
    replaced: list[int] = []
    for owner, at in batch.by_tenant().items():
        replaced += records.ids_by_key(key, [values[p] for p in at], tenant=owner)
    return replaced


def check_present(records: RecordStore, ids: list[int]) -> None:
    """NotFoundError naming the first ids (up to 10) of ``ids`` that are not in the memory."""
    missing = set(ids) - records.existing(ids)
    if missing:
        raise NotFoundError(f"no entries with ids {sorted(missing)[:10]}")
