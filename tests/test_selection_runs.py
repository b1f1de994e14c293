"""The new replay methods and head remedies end to end in the run loop (tiny BERT, two WordNet tasks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _models import tiny_run_config

from rehearsal.runner import loop as stream_module
from rehearsal.runner.strategies import STRATEGIES
from rehearsal.runner.tasks import TaskStream

pytestmark = [pytest.mark.usefixtures("master_key"), pytest.mark.slow]


@pytest.mark.parametrize(
    "changes",
    [
        {"method": "mir"},
        {"method": "coverage"},
        {"method": "diverse"},
        {"method": "mir", "loss": "separated", "prediction": "ncm"},
        {"method": "coverage", "replay": {"coverage_quotas": "distance", "group_by": "task"}},
    ],
    ids=["mir", "coverage", "diverse", "mir-separated-ncm", "coverage-quotas"],
)
def test_new_methods_run_end_to_end(
    changes: dict[str, Any], tmp_path: Path, tiny_model: str, tiny_stream: TaskStream
) -> None:
    changes = dict(changes)
    replay = {"ratio": 0.25, **changes.pop("replay", {})}
    config = tiny_run_config(tmp_path, tiny_model, replay=replay, **changes)
    result = stream_module.run(config, stream=tiny_stream)
    assert result.matrix.completed_tasks == 2
    # Phase 1 replays phase 0's examples: one step of 12 new rows -> 4 replay slots.
    assert result.cost.replayed_examples == 4
    assert np.isfinite(result.summary["average_accuracy"])


def test_ncm_prediction_uses_the_class_means_of_every_seen_class(
    tmp_path: Path, tiny_model: str, tiny_stream: TaskStream, monkeypatch: pytest.MonkeyPatch
) -> None:
    fitted: list[list[int]] = []
    strategy_cls = STRATEGIES["coverage"]
    real_fit = strategy_cls.fit_predictor

    def spying_fit(self: Any, model: Any, ctx: Any) -> None:
        real_fit(self, model, ctx)
        assert self.predictor is not None
        fitted.append(list(self.predictor.classes))

    monkeypatch.setattr(strategy_cls, "fit_predictor", spying_fit)
    stream_module.run(
        tiny_run_config(tmp_path, tiny_model, method="coverage", prediction="ncm"), stream=tiny_stream
    )
    first = sorted(tiny_stream.label_id(label) for label in tiny_stream.tasks[0].labels)
    assert fitted == [first, list(range(6))]
