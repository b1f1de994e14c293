"""Applying an admission policy to a memory: decide, then evict and add in one durable transaction."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from rehearsal.policies import AdmissionPolicy, EntryInfo

if TYPE_CHECKING:
    from rehearsal.memory import RehearsalMemory

__all__ = ["admit_batch"]


def _label(value: Any) -> str | None:
    return None if value is None else str(value)


def admit_batch(
    memory: RehearsalMemory,
    texts: Sequence[str] | None,
    *,
    policy: AdmissionPolicy,
    rng: np.random.Generator,
    metadata: Sequence[Mapping[str, Any]] | None = None,
    tenant: str | None = None,
    vectors: np.ndarray | None = None,
    sources: Sequence[str] | None = None,
) -> list[int]:
    """Offer a batch to ``policy``; returns the ids of the admitted examples.

    The policy's state (e.g. the reservoir's count of items seen) is stored in the memory in the same
    transaction as the eviction and the addition, so a crash never leaves them out of step.
    """
    batch = memory._prepare_batch(texts, metadata, tenant, vectors, sources)
    state_key = f"policy.{policy.name}"
    with memory._lock:
        saved = memory._catalog.get_meta(state_key)
        if saved is not None:
            policy.load_state_dict(json.loads(saved))
        residents = [
            EntryInfo(id=row.id, label=_label(row.label), tags=frozenset(row.tags))
            for row in memory._catalog.all_rows()
        ]
        incoming = [
            EntryInfo(id=pos, label=_label(meta.get("label")), tags=frozenset(meta.get("tags", ())))
            for pos, meta in enumerate(batch.metadata)
        ]
        decision = policy.decide(incoming, residents, rng=rng)
        keep = decision.admit
        chosen = batch.subset(keep)
        state = {state_key: json.dumps(policy.state_dict())}
        return memory._commit(chosen if keep else None, evict=list(decision.evict), state=state)
