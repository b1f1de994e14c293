"""Continual-learning metrics: the accuracy matrix and the summaries read from it, and the cost of a run.

``R[i][j]`` is the accuracy on task ``j`` measured after training on task ``i`` (0-based here; papers count
from 1). With ``k`` tasks trained so far:

- average accuracy   ACC = mean_{j<=k-1} R[k-1][j]                                (Lopez-Paz & Ranzato 2017)
- backward transfer  BWT = mean_{j<k-1} R[k-1][j] - R[j][j]                       (idem; < 0: forgetting)
- forward transfer   FWT = mean_{1<=j<=k-1} R[j-1][j] - b[j], b[j] the accuracy of the untrained model (idem)
- forgetting         F   = mean_{j<k-1} max_{j<=l<=k-2} R[l][j] - R[k-1][j]        (Chaudhry et al. 2018)

A row counts as *completed* once every task trained so far has been measured in it (``R[i][0..i]``). The
summaries are computed over the leading completed rows, i.e. as if the stream stopped there, so they can be
logged while training is still under way; a summary that needs more than has been measured raises
:class:`ValidationError` saying what is missing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from rehearsal.errors import ValidationError

__all__ = ["AccuracyMatrix", "RunCost"]


def _check_fraction(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValidationError(f"{name} must be a number in [0, 1], got {value!r}")
    if not 0.0 <= float(value) <= 1.0:  # also rejects NaN
        raise ValidationError(f"{name} must be in [0, 1], got {value!r}")
    return float(value)


class AccuracyMatrix:
    """A T×T matrix of accuracies, filled a row per task as training goes on; NaN where not measured."""

    def __init__(self, task_names: Sequence[str]) -> None:
        names = tuple(task_names)
        if not names:
            raise ValidationError("an accuracy matrix needs at least one task")
        if any(not isinstance(n, str) or not n for n in names) or len(set(names)) != len(names):
            raise ValidationError(f"task names must be distinct non-empty strings, got {list(names)}")
        self._names = names
        self._index = {name: i for i, name in enumerate(names)}
        self._r = np.full((len(names), len(names)), np.nan)

    @property
    def task_names(self) -> tuple[str, ...]:
        return self._names

    @property
    def matrix(self) -> np.ndarray:
        """A copy of R, shape (T, T), float64, NaN where not yet measured."""
        return self._r.copy()

    def record(self, after_task: int | str, on_task: int | str, accuracy: float) -> None:
        """Set R[after_task][on_task]; a second record of the same cell replaces the first."""
        i, j = self._task_index(after_task), self._task_index(on_task)
        self._r[i, j] = _check_fraction("accuracy", accuracy)

    @property
    def completed_tasks(self) -> int:
        """How many leading rows are completed (R[i][0..i] all measured): the number of tasks summarised."""
        k = 0
        while k < len(self._names) and not np.isnan(self._r[k, : k + 1]).any():
            k += 1
        return k

    def average_accuracy(self, after_task: int | str | None = None) -> float:
        """Mean accuracy on the tasks seen so far, after ``after_task`` (default: the last completed row)."""
        if after_task is None:
            i = self._completed(1, "average accuracy") - 1
        else:
            i = self._task_index(after_task)
            missing = [self._names[j] for j in range(i + 1) if np.isnan(self._r[i, j])]
            if missing:
                raise ValidationError(
                    f"average accuracy after {self._names[i]!r} needs accuracies on {missing}, not recorded"
                )
        return float(self._r[i, : i + 1].mean())

    def backward_transfer(self) -> float:
        """Mean change on each earlier task between right after learning it and now; negative = forgetting."""
        k = self._completed(2, "backward transfer")
        last, diag = self._r[k - 1, : k - 1], np.diag(self._r)[: k - 1]
        return float((last - diag).mean())

    def forward_transfer(self, baseline: Sequence[float]) -> float:
        """Mean gain on each task *before* training on it, over ``baseline`` (an untrained model's accuracy).

        Needs R[j-1][j]: evaluate on the next task before training on it.
        """
        if len(baseline) != len(self._names):
            raise ValidationError(
                f"baseline needs one accuracy per task ({len(self._names)}), got {len(baseline)}"
            )
        b = np.array([_check_fraction(f"baseline[{j}]", v) for j, v in enumerate(baseline)])
        k = self._completed(2, "forward transfer")
        ahead = np.array([self._r[j - 1, j] for j in range(1, k)])
        if np.isnan(ahead).any():
            j = 1 + int(np.flatnonzero(np.isnan(ahead))[0])
            raise ValidationError(
                f"forward transfer needs the accuracy on {self._names[j]!r} after {self._names[j - 1]!r} "
                "(measured before training on it), not recorded"
            )
        return float((ahead - b[1:k]).mean())

    def per_task_forgetting(self) -> dict[str, float]:
        """For each task but the last completed one: its best accuracy before now minus its accuracy now."""
        k = self._completed(2, "forgetting")
        return {self._names[j]: float(self._r[j : k - 1, j].max() - self._r[k - 1, j]) for j in range(k - 1)}

    def forgetting(self) -> float:
        return float(np.mean(list(self.per_task_forgetting().values())))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: NaN (not measured) becomes None."""
        rows = [[None if math.isnan(v) else float(v) for v in row] for row in self._r.tolist()]
        return {"task_names": list(self._names), "matrix": rows}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AccuracyMatrix:
        if set(data) != {"task_names", "matrix"}:
            raise ValidationError(f"expected keys ['matrix', 'task_names'], got {sorted(data)}")
        result = cls(data["task_names"])
        rows = data["matrix"]
        t = len(result._names)
        if (
            not isinstance(rows, Sequence)
            or len(rows) != t
            or any(not isinstance(row, Sequence) or len(row) != t for row in rows)
        ):
            raise ValidationError(f"'matrix' must be {t} rows of {t} values")
        for i, row in enumerate(rows):
            for j, value in enumerate(row):
                if value is not None:
                    result.record(i, j, value)
        return result

    def to_markdown(self, *, digits: int = 3) -> str:
        """A Markdown table: a row per task trained, a column per task tested; — where not measured."""
        header = "| after \\ on | " + " | ".join(self._names) + " |"
        rule = "|---" * (len(self._names) + 1) + "|"
        lines = [header, rule]
        for name, row in zip(self._names, self._r, strict=True):
            cells = ["—" if math.isnan(v) else f"{v:.{digits}f}" for v in row]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AccuracyMatrix):
            return NotImplemented
        return self._names == other._names and bool(np.array_equal(self._r, other._r, equal_nan=True))

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"AccuracyMatrix(tasks={list(self._names)}, completed_tasks={self.completed_tasks})"

    def _task_index(self, task: int | str) -> int:
        if isinstance(task, str):
            if task not in self._index:
                raise ValidationError(f"unknown task {task!r}; tasks are {list(self._names)}")
            return self._index[task]
        if isinstance(task, bool) or not isinstance(task, (int, np.integer)):
            raise ValidationError(f"a task is a name or an index, got {task!r}")
        if not 0 <= task < len(self._names):
            raise ValidationError(f"task index {task} out of range for {len(self._names)} tasks")
        return int(task)

    def _completed(self, needed: int, what: str) -> int:
        k = self.completed_tasks
        if k < needed:
            raise ValidationError(
                f"{what} needs at least {needed} completed row(s) (R[i][0..i] all recorded), have {k}"
            )
        return k


@dataclass(frozen=True)
class RunCost:
    """What a continual-learning run spent, to weigh accuracy against."""

    wall_seconds: float = 0.0
    train_examples: int = 0  # new examples trained on, counted once per epoch
    replayed_examples: int = 0  # replay examples mixed into batches, counted every time one is used
    replayed_tokens: int = 0
    memory_bytes_on_disk: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "wall_seconds":
                ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < math.inf
            else:
                ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
            if not ok:
                raise ValidationError(f"{f.name!r} must be a non-negative {f.type}, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunCost:
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValidationError(f"unknown RunCost fields {sorted(unknown)}")
        return cls(**data)
