"""The staged candidate (``pending.json``'s body) is a typed record: it round-trips through JSON and a body
of another shape is refused naming its fields."""

from __future__ import annotations

import json
from typing import Any

import pytest

from rehearsal.deployment.staged import StagedCandidate
from rehearsal.errors import StoreFormatError


def _candidate(**changes: Any) -> StagedCandidate:
    fields: dict[str, Any] = {
        "update": "week-02",
        "weights": "weights/week-02",
        "generation_before": 4,
        "tasks": ["billing", "returns"],
        "new_tasks": ["returns"],
        "before": {"accuracy": {"billing": 0.9}},
        "after": {"accuracy": {"billing": 0.88, "returns": 0.7}},
        "staged": {"billing": [[1, 0, 1], [1, 1, 1]]},
        "suite_ids": [3, 4, 5],
        "flags": [["pii", "an e-mail address"]],
        "gate_preview": {"decision": "pass", "codes": []},
    }
    return StagedCandidate(**{**fields, **changes})


@pytest.mark.parametrize(
    "candidate",
    [
        _candidate(),
        _candidate(shadow={"mode": "shadow", "agreement": 0.5}, live={"mode": "shadow", "correct": {}}),
        _candidate(flags=[], gate_preview=None),
    ],
)
def test_a_staged_candidate_round_trips_through_json(candidate: StagedCandidate) -> None:
    assert StagedCandidate.from_dict(json.loads(json.dumps(candidate.to_dict()))) == candidate


def test_unset_optional_parts_are_left_out_of_the_file() -> None:
    body = _candidate().to_dict()
    assert "shadow" not in body
    assert "live" not in body
    assert body["gate_preview"] == {"decision": "pass", "codes": []}


def test_a_body_missing_fields_or_with_unknown_ones_is_refused() -> None:
    body = _candidate().to_dict()
    del body["suite_ids"]
    with pytest.raises(StoreFormatError, match=r"unknown fields \['speed'\], missing \['suite_ids'\]"):
        StagedCandidate.from_dict({**body, "speed": 1})


def test_a_body_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(StoreFormatError, match="must be a JSON object, got list"):
        StagedCandidate.from_dict([])
    with pytest.raises(StoreFormatError, match="names its update and weights as text"):
        StagedCandidate.from_dict({**_candidate().to_dict(), "weights": 3})
