"""What the tests of the exported encoder backends (int8, openvino) share: a few glosses, recall@10 against
the fp32 neighbours, and a cache folder of the test module's own."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from rehearsal.int8_runtime import CACHE_ENV

TEXTS = [
    "a large carnivorous feline of Africa and Asia",
    "a device that measures the passage of time",
    "to move swiftly on foot",
    "having a pleasant taste",
    "the act of giving a formal talk to an audience",
    "a small domesticated carnivore kept as a pet",
]


def recall_at_10(reference: np.ndarray, other: np.ndarray) -> float:
    def nearest(x: np.ndarray) -> np.ndarray:
        sims = x @ x.T
        np.fill_diagonal(sims, -np.inf)
        return np.argsort(-sims, axis=1)[:, :10]

    a, b = nearest(reference), nearest(other)
    return float(np.mean([len(set(r) & set(s)) / 10 for r, s in zip(a, b, strict=True)]))


def private_cache(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[None]:
    """Built models go to a folder of the calling module's, never the user's cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(tmp_path_factory.mktemp(name)))
        yield
