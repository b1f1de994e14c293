"""The memory examples a predictor is fitted on: a seeded, class-balanced draw of entries and their texts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from rehearsal.errors import ConfigError

if TYPE_CHECKING:
    from rehearsal.memory.facade import RehearsalMemory

__all__ = ["memory_sample", "sample_ids"]


def sample_ids(
    memory: RehearsalMemory,
    classes: Sequence[int],
    per_class: int | None,
    *,
    seed: Sequence[int],
    where: Mapping[str, Any] | None = None,
) -> tuple[list[int], list[int]]:
    """(ids, labels): up to ``per_class`` entries (all when None) of each label in ``classes`` among the
    entries matching ``where``, drawn without replacement in label order with
    ``numpy.random.default_rng(seed)``. Only entries the memory holds now are drawn: a deleted or
    forgotten entry is never among them."""
    rng = np.random.default_rng(list(seed))
    groups = memory.group_ids("label", where=where)
    ids: list[int] = []
    for label in sorted(classes):
        members = groups.get(label, [])
        take = len(members) if per_class is None else min(len(members), per_class)
        ids.extend(int(i) for i in rng.choice(members, size=take, replace=False))
    rows = memory.entries(ids)
    labels: list[int] = []
    for i in ids:
        value = rows[i].label
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(
                f"memory entry {i} has label {value!r}; predictors need the model's integer label ids"
            )
        labels.append(value)
    return ids, labels


def memory_sample(
    memory: RehearsalMemory,
    classes: Sequence[int],
    per_class: int | None,
    *,
    seed: Sequence[int],
    where: Mapping[str, Any] | None = None,
) -> tuple[list[str], list[int]]:
    """(texts, labels) of :func:`sample_ids`' draw (the texts decrypted from the memory's vault)."""
    ids, labels = sample_ids(memory, classes, per_class, seed=seed, where=where)
    return memory.get_texts(ids), labels
