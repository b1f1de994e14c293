"""Applying an admission policy to a batch: which of it to admit and which residents to evict.

The facade commits the decision: evictions, additions and the policy's state (e.g. the reservoir's count
of items seen) go into one durable transaction, so a crash never leaves them out of step.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rehearsal.memory.policies import AdmissionPolicy, EntryInfo
from rehearsal.store.types import EntryRow

__all__ = ["Admission", "decide_admission", "policy_state_key"]


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
