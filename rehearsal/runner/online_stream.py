"""What an online run sees: the stream cut into small batches in arrival order, and the fixed probe sets.

Tasks arrive in stream order; within a task the examples are shuffled (seeded by the run's seed and the
task's position), then cut into batches of ``batch_size`` (a task's last batch may be smaller), so a batch
never holds two tasks and the evaluator knows the step at which each task begins. The learner is not told.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rehearsal.runner.tasks import Example, TaskStream

__all__ = ["OnlineBatch", "probe_sets", "stream_batches"]


@dataclass(frozen=True)
class OnlineBatch:
    index: int  # the training step that takes this batch
    task: str
    examples: tuple[Example, ...]
    first_of_task: bool
    last_of_task: bool

    @property
    def texts(self) -> list[str]:
        return [ex.text for ex in self.examples]


def stream_batches(stream: TaskStream, batch_size: int, *, seed: int) -> list[OnlineBatch]:
    """Every training example of ``stream`` once, in batches (see the module docstring)."""
    batches: list[OnlineBatch] = []
    for j, task in enumerate(stream.tasks):
        order = np.random.default_rng([seed, j]).permutation(len(task.train))
        examples = [task.train[int(i)] for i in order]
        starts = list(range(0, len(examples), batch_size))
        for n, start in enumerate(starts):
            batches.append(
                OnlineBatch(
                    index=len(batches),
                    task=task.name,
                    examples=tuple(examples[start : start + batch_size]),
                    first_of_task=n == 0,
                    last_of_task=n == len(starts) - 1,
                )
            )
    return batches


def probe_sets(stream: TaskStream, per_class: int) -> dict[str, tuple[list[str], list[int]]]:
    """Per task, (texts, label ids) of the first ``per_class`` test examples of each of its labels."""
    out: dict[str, tuple[list[str], list[int]]] = {}
    for task in stream.tasks:
        taken: dict[str, int] = {}
        texts: list[str] = []
        labels: list[int] = []
        for ex in task.test:
            if taken.get(ex.known_label, 0) < per_class:
                taken[ex.known_label] = taken.get(ex.known_label, 0) + 1
                texts.append(ex.text)
                labels.append(stream.label_id(ex.label))
        out[task.name] = (texts, labels)
    return out
