"""Scoring a version on labelled examples: per task, per slice, safety-tagged, and its latency; and the
check that a new task was learned at all."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rehearsal.deployment.folder import VersionState
from rehearsal.deployment.model import DeployedModel
from rehearsal.examples import Example
from rehearsal.governance.audit_log import safe_token
from rehearsal.memory.facade import RehearsalMemory

__all__ = ["Scored", "latency_summary", "score", "unlearned_tasks"]


def latency_summary(latencies_ms: Sequence[float]) -> dict[str, float]:
    """p50 and p95 of per-request latencies, in milliseconds (0 for none)."""
    if not len(latencies_ms):
        return {"p50_ms": 0.0, "p95_ms": 0.0}
    p50, p95 = np.quantile(np.asarray(latencies_ms, dtype=np.float64), [0.5, 0.95])
    return {"p50_ms": round(float(p50), 3), "p95_ms": round(float(p95), 3)}


@dataclass(frozen=True)
class Scored:
    """One model's answers on labelled examples."""

    answers: list[str]
    correct: np.ndarray  # (n,) bool
    examples: list[Example]

    def by_task(self) -> dict[str, np.ndarray]:
        out: dict[str, list[bool]] = {}
        for ex, ok in zip(self.examples, self.correct.tolist(), strict=True):
            out.setdefault(ex.task, []).append(bool(ok))
        return {task: np.asarray(v, dtype=bool) for task, v in out.items()}

    def accuracy_by_task(self) -> dict[str, float]:
        return {task: float(v.mean()) for task, v in self.by_task().items()}

    def accuracy_by_tag(self, tags: Sequence[str]) -> dict[str, Any]:
        """Accuracy and count of the examples carrying any of ``tags`` (None when there are none)."""
        rows = [i for i, ex in enumerate(self.examples) if set(ex.tags) & set(tags)]
        acc = float(self.correct[rows].mean()) if rows else None
        return {"accuracy": acc, "n": len(rows)}


def score(model: DeployedModel, examples: Sequence[Example], memory: RehearsalMemory | None) -> Scored:
    answers = model.predict([ex.text for ex in examples], memory) if examples else []
    correct = np.asarray([a == ex.label for a, ex in zip(answers, examples, strict=True)], dtype=bool)
    return Scored(answers, correct, list(examples))


def timed_latency(
    model: DeployedModel, examples: Sequence[Example], memory: RehearsalMemory | None, *, limit: int = 16
) -> dict[str, float]:
    """Per-request latency of ``model`` on the first ``limit`` examples, one request at a time."""
    _, latencies = model.timed_predict([ex.text for ex in examples[:limit]], memory)
    return latency_summary(latencies)


def unlearned_tasks(
    state: VersionState, before: dict[str, float], after: dict[str, float], held: list[Example]
) -> list[tuple[str, str]]:
    """A flag (code, reason) for each task the update brings that the candidate answers no better than
    chance (one over its labels) on its held-out examples: shipping a task the model did not learn is a
    silent failure the regression suite, which only looks at old tasks, cannot see."""
    flags = []
    for task in sorted(set(after) - set(before)):
        labels = len(state.tasks.get(task, [])) or 1
        chance = 1.0 / labels
        if labels > 1 and after[task] <= chance:
            n = sum(ex.task == task for ex in held)
            reason = (
                f"learning: new task {task!r} scores {after[task]:.3f} on its {n} held-out examples, no "
                f"better than chance over its {labels} labels ({chance:.3f}): a person must accept it"
            )
            flags.append((f"unlearned:{safe_token(task)}", reason))
    return flags
