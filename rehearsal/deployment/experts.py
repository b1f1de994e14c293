"""Which adapter(s) an update trains, and on which of its examples (the training plan).

- ``ewc``: the whole model, on every example, with replay from the whole memory;
- ``adapter-replay``: the shared adapter, likewise;
- ``expert-growth``: a batch the novelty score calls novel (or the first one) gets a new expert and
  router entry, trained without replay, and its tasks move to it. A batch that is not novel is split by
  task: a task some expert already holds trains that expert, so a batch mixing tasks of different experts
  changes each of them on its own rows, with replay of that expert's tasks; a task no expert holds yet
  joins the expert its rows route to (their pooled k-NN vote over the memory).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from rehearsal.deployment.config import DeploymentConfig
from rehearsal.deployment.folder import VersionState
from rehearsal.deployment.model import SHARED
from rehearsal.governance.audit_log import AuditLog
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.methods.novelty import novelty
from rehearsal.methods.router import AdapterRouter

__all__ = ["ALL", "Part", "log_novelty", "plan_training"]

ALL: dict[str, Any] = {}  # the where-filter that matches every memory entry


@dataclasses.dataclass(frozen=True)
class Part:
    """One training pass: ``adapter`` (None: the whole model) on the rows ``rows`` of the update's
    training examples, with replay from entries matching ``replay_where`` (None: no replay)."""

    adapter: str | None
    replay_where: dict[str, Any] | None
    rows: list[int]


def plan_training(
    config: DeploymentConfig,
    memory: RehearsalMemory,
    state: VersionState,
    vectors: np.ndarray,
    tasks: Sequence[str],
) -> tuple[list[Part], dict[str, Any] | None]:
    """(parts, novelty details or None) for training examples of ``tasks`` (one per row of ``vectors``,
    (n, dim)). ``state`` (the candidate's) gets its experts' task lists updated for expert growth."""
    everything = list(range(len(tasks)))
    if config.strategy == "ewc":
        return [Part(None, ALL, everything)], None
    if config.strategy == "adapter-replay":
        return [Part(SHARED, ALL, everything)], None
    new_tasks = sorted(set(tasks))
    score = novelty(
        memory,
        vectors,
        threshold=config.novelty_threshold,
        calibration_size=config.novelty_calibration,
        rng=np.random.default_rng(config.seed),
    )
    details = score.to_dict()
    if score.novel or not state.experts:
        name = f"expert_{len(state.experts)}"
        for held in state.experts.values():
            held[:] = [t for t in held if t not in new_tasks]
        state.experts[name] = list(new_tasks)
        details.update(decision="new-expert", expert=name, experts={name: list(new_tasks)})
        return [Part(name, None, everything)], details
    router = AdapterRouter(memory, k=config.route_k, threshold=0.0, fallback="-")
    rows_of: dict[str, list[int]] = {}
    for task in new_tasks:
        rows = [i for i, t in enumerate(tasks) if t == task]
        expert = state.expert_of(task)
        if expert is None:
            # A task no expert holds yet goes where its rows route, and stays there.
            expert = state.expert_of(router.route_pooled(vectors[rows])) or next(iter(state.experts))
            state.experts[expert].append(task)
        rows_of.setdefault(expert, []).extend(rows)
    parts = [
        Part(expert, {"task": {"$in": list(state.experts[expert])}}, sorted(rows))
        for expert, rows in sorted(rows_of.items())
    ]
    biggest = max(parts, key=lambda p: len(p.rows)).adapter
    experts = {str(p.adapter): sorted({tasks[i] for i in p.rows}) for p in parts}
    details.update(decision="existing-expert", expert=biggest, experts=experts)
    return parts, details


def log_novelty(log: AuditLog, uid: str, details: dict[str, Any]) -> None:
    """The novelty score of an update's data and the expert decision it led to, as an audit entry."""
    entry = {k: v for k, v in details.items() if k != "threshold"}
    log.append("novelty", {"update": uid, "threshold": details["threshold"], **entry}, actor="deployment")
