"""Anytime metrics: accuracy measured *during* training, not only at task boundaries.

A run probes a small fixed set of each seen task's test examples every few steps and keeps the results
in a :class:`ProbeTrace`; from it come

- ``anytime_auc`` (A_AUC, Koh et al. ICLR 2022): the area under the curve of the mean probe accuracy over
  the seen tasks, step by step (trapezoids), divided by the steps it spans, so it reads as an accuracy;
- per task after the first, its :class:`StabilityGap` (De Lange et al. ICLR 2023): the mean probe accuracy of
  the tasks before it, from the probe at its start to the probe at the next task's start; the gap's
  *depth* is how far the minimum falls below the start value, and recovery is the first probe after the
  minimum back at (or above) the start value.

Online accuracy (Cai et al. ICCV 2021) is the share of the stream's examples predicted right *before* the
model trained on them; the online loop counts it (``rehearsal.runner.online``). Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rehearsal.errors import ValidationError

__all__ = ["ProbeTrace", "StabilityGap", "anytime_auc", "anytime_summary", "stability_gaps"]


@dataclasses.dataclass
class ProbeTrace:
    """Probe accuracies over a run: ``accuracy[i]`` maps each task probed at ``steps[i]`` to its accuracy.

    ``task_starts[j]`` is the step at which task ``j``'s first example arrived (None: not yet). A probe at
    step ``s`` comes after ``s`` training steps; steps never decrease.
    """

    task_names: list[str]
    task_starts: list[int | None] = dataclasses.field(default_factory=list)
    steps: list[int] = dataclasses.field(default_factory=list)
    accuracy: list[dict[str, float]] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.task_starts:
            self.task_starts = [None] * len(self.task_names)
        if len(self.task_starts) != len(self.task_names):
            raise ValidationError(
                f"task_starts must have one entry per task ({len(self.task_names)}), got {self.task_starts}"
            )

    def start_task(self, name: str, step: int) -> None:
        """Task ``name``'s first example arrives before training step ``step``."""
        self.task_starts[self.task_names.index(name)] = int(step)

    def record(self, step: int, accuracy: Mapping[str, float]) -> None:
        if self.steps and step < self.steps[-1]:
            raise ValidationError(f"probe steps never decrease: {step} after {self.steps[-1]}")
        unknown = set(accuracy) - set(self.task_names)
        if unknown:
            raise ValidationError(f"probe of unknown tasks {sorted(unknown)}")
        self.steps.append(int(step))
        self.accuracy.append({k: float(v) for k, v in accuracy.items()})

    def seen_average(self) -> list[float | None]:
        """Per probe, the mean accuracy over the tasks it probed (None where it probed none)."""
        return [float(np.mean(list(row.values()))) if row else None for row in self.accuracy]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProbeTrace:
        return cls(
            task_names=list(data["task_names"]),
            task_starts=list(data["task_starts"]),
            steps=[int(s) for s in data["steps"]],
            accuracy=[dict(row) for row in data["accuracy"]],
        )


@dataclasses.dataclass(frozen=True)
class StabilityGap:
    """How the tasks before ``task`` fared while ``task`` was learned (mean probe accuracy over them)."""

    task: str
    start_step: int
    start_accuracy: float  # at the probe at the task's start, before its first step
    min_accuracy: float  # the lowest probe until the next task's start
    depth: float  # start_accuracy - min_accuracy (0 when it never fell)
    min_after: int  # steps from the task's start to the minimum
    recovered_after: int | None  # steps from the task's start back to start_accuracy; None: never
    end_accuracy: float  # at the last probe of the task

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def anytime_auc(trace: ProbeTrace) -> float | None:
    """A_AUC: the step-weighted mean (trapezoids) of the seen-task probe accuracy; one probe: its value;
    None without any probe of a seen task."""
    points = [(s, a) for s, a in zip(trace.steps, trace.seen_average(), strict=True) if a is not None]
    if not points:
        return None
    steps = np.asarray([s for s, _ in points], dtype=np.float64)
    values = np.asarray([a for _, a in points], dtype=np.float64)
    span = steps[-1] - steps[0]
    if span == 0:
        return float(values.mean())
    area = float(np.sum((values[1:] + values[:-1]) / 2.0 * np.diff(steps)))
    return area / float(span)


def _old_task_curve(trace: ProbeTrace, t: int, start: int, end: int) -> list[tuple[int, float]]:
    """(step, mean probe accuracy over the tasks before ``t``) for the probes in [start, end]."""
    old = [trace.task_names[j] for j in range(t) if trace.task_starts[j] is not None]
    curve = []
    for step, row in zip(trace.steps, trace.accuracy, strict=True):
        if start <= step <= end and old and all(name in row for name in old):
            curve.append((step, float(np.mean([row[name] for name in old]))))
    return curve


def stability_gaps(trace: ProbeTrace, *, last_step: int) -> list[StabilityGap]:
    """The gap of every started task after the first, over its probes up to the next task's start (the
    last task's: up to ``last_step``). A task without a probe at its start has none."""
    gaps = []
    starts = trace.task_starts
    for t in range(1, len(trace.task_names)):
        start = starts[t]
        if start is None:
            continue
        later = [s for s in starts[t + 1 :] if s is not None]
        end = min(later) if later else last_step
        curve = _old_task_curve(trace, t, start, end)
        if not curve or curve[0][0] != start:
            continue
        start_value = curve[0][1]
        low = min(range(len(curve)), key=lambda i: (curve[i][1], i))
        depth = max(0.0, start_value - curve[low][1])
        recovered = 0 if depth == 0.0 else _recovery(curve, low, start_value, start)
        gaps.append(
            StabilityGap(
                task=trace.task_names[t],
                start_step=start,
                start_accuracy=start_value,
                min_accuracy=curve[low][1],
                depth=depth,
                min_after=curve[low][0] - start,
                recovered_after=recovered,
                end_accuracy=curve[-1][1],
            )
        )
    return gaps


def _recovery(curve: Sequence[tuple[int, float]], low: int, target: float, start: int) -> int | None:
    for step, value in curve[low + 1 :]:
        if value >= target:
            return step - start
    return None


def anytime_summary(
    trace: ProbeTrace, *, correct: int, tested: int, last_step: int, probe_seconds: float, wall_seconds: float
) -> dict[str, Any]:
    """The anytime figures of a run, as results.json keeps them."""
    gaps = stability_gaps(trace, last_step=last_step)
    depths = [g.depth for g in gaps]
    return {
        "online_accuracy": correct / tested if tested else None,
        "tested_examples": tested,
        "anytime_auc": anytime_auc(trace),
        "stability_gaps": [g.to_dict() for g in gaps],
        "mean_gap_depth": float(np.mean(depths)) if depths else None,
        "probe_seconds": probe_seconds,
        "probe_share": probe_seconds / wall_seconds if wall_seconds > 0 else None,
        "probes": len(trace.steps),
    }
