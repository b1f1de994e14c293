"""Which adapter(s) an update trains, and on which of its examples (the training plan), and how expert
growth makes that plan (``rehearsal.deployment.strategies`` asks each strategy for its plan).

- ``ewc``: the whole model, on every example, with replay from the whole memory;
- ``adapter-replay``: the shared adapter, likewise;
- ``expert-growth`` (:func:`grow_experts`): a batch the novelty score calls novel (or the first one) gets
  a new expert and router entry, trained without replay, and its tasks move to it. A batch that is not
  novel is split by task: a task some expert already holds trains that expert, so a batch mixing tasks of
  different experts changes each of them on its own rows, with replay of that expert's tasks; a task no
  expert holds yet joins the expert its rows route to (their pooled k-NN vote over the memory).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from rehearsal.governance.audit_log import AuditLog
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.methods.novelty import novelty
from rehearsal.methods.router import AdapterRouter

__all__ = ["ALL", "Part", "PlanSettings", "expert_name", "grow_experts", "log_novelty"]

ALL: dict[str, Any] = {}  # the where-filter that matches every memory entry


class PlanSettings(Protocol):
    """The config fields a training plan reads (``DeploymentConfig``, which imports the strategy registry
    and so this module: named by what it holds rather than imported)."""

    novelty_threshold: float
    novelty_calibration: int
    route_k: int
    seed: int


@dataclasses.dataclass(frozen=True)
class Part:
    """One training pass: ``adapter`` (None: the whole model) on the rows ``rows`` of the update's
    training examples, with replay from entries matching ``replay_where`` (None: no replay)."""

    adapter: str | None
    replay_where: dict[str, Any] | None
    rows: list[int]


def expert_name(index: int) -> str:
    """The adapter name of a deployment's ``index``-th expert (from 0, in the order they grew)."""
    return f"expert_{index}"


def _expert_of(experts: dict[str, list[str]], task: str) -> str | None:
    return next((name for name, tasks in experts.items() if task in tasks), None)


def grow_experts(
    config: PlanSettings,
    memory: RehearsalMemory,
    experts: dict[str, list[str]],
    vectors: np.ndarray,
    tasks: Sequence[str],
) -> tuple[list[Part], dict[str, Any]]:
    """(parts, novelty details) for training examples of ``tasks`` (one per row of ``vectors``, (n, dim)).
    ``experts`` (the candidate's, expert adapter -> tasks) gets its task lists updated in place."""
    everything = list(range(len(tasks)))
    new_tasks = sorted(set(tasks))
    score = novelty(
        memory,
        vectors,
        threshold=config.novelty_threshold,
        calibration_size=config.novelty_calibration,
        rng=np.random.default_rng(config.seed),
    )
    details = score.to_dict()
    if score.novel or not experts:
        name = expert_name(len(experts))
        for held in experts.values():
            held[:] = [t for t in held if t not in new_tasks]
        experts[name] = list(new_tasks)
        details.update(decision="new-expert", expert=name, experts={name: list(new_tasks)})
        return [Part(name, None, everything)], details
    router = AdapterRouter(memory, k=config.route_k, threshold=0.0, fallback="-")
    rows_of: dict[str, list[int]] = {}
    for task in new_tasks:
        rows = [i for i, t in enumerate(tasks) if t == task]
        expert = _expert_of(experts, task)
        if expert is None:
            # A task no expert holds yet goes where its rows route, and stays there.
            expert = _expert_of(experts, router.route_pooled(vectors[rows])) or next(iter(experts))
            experts[expert].append(task)
        rows_of.setdefault(expert, []).extend(rows)
    parts = [
        Part(expert, {"task": {"$in": list(experts[expert])}}, sorted(rows))
        for expert, rows in sorted(rows_of.items())
    ]
    biggest = max(parts, key=lambda p: len(p.rows)).adapter
    grown = {str(p.adapter): sorted({tasks[i] for i in p.rows}) for p in parts}
    details.update(decision="existing-expert", expert=biggest, experts=grown)
    return parts, details


def log_novelty(log: AuditLog, uid: str, details: dict[str, Any]) -> None:
    """The novelty score of an update's data and the expert decision it led to, as an audit entry."""
    entry = {k: v for k, v in details.items() if k != "threshold"}
    log.append("novelty", {"update": uid, "threshold": details["threshold"], **entry}, actor="deployment")
