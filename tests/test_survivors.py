"""Small tests written to kill mutants that survived ``scripts/mutation.py``: each pins a behaviour the
other tests left loose (a boundary, a field named in an error, a count kept in a state)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import rehearsal as rh
from rehearsal.memory.policies import EntryInfo
from rehearsal.store.where import parse_where as compile_where

# -- filters -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", [{"id": "3"}, {"id": {"$ne": "3"}}, {"id": {"$in": [1, "3"]}}])
def test_an_id_filter_takes_only_ints(where: dict[str, Any]) -> None:
    with pytest.raises(rh.ValidationError, match="filter value for 'id' must be int, got '3'"):
        compile_where(where)


# -- metrics -----------------------------------------------------------------------------------------


def test_an_accuracy_of_exactly_one_or_zero_is_recorded() -> None:
    m = rh.AccuracyMatrix(["a"])
    m.record(0, 0, 1.0)
    assert m.average_accuracy() == 1.0
    m.record(0, 0, 0)
    assert m.average_accuracy() == 0.0


def test_matrices_with_the_same_tasks_but_other_accuracies_differ() -> None:
    a, b = rh.AccuracyMatrix(["x", "y"]), rh.AccuracyMatrix(["x", "y"])
    a.record(0, 0, 0.5)
    b.record(0, 0, 0.6)
    assert a != b
    b.record(0, 0, 0.5)
    assert a == b
    assert rh.AccuracyMatrix(["x", "z"]) != rh.AccuracyMatrix(["x", "y"])


def test_an_empty_task_name_is_rejected() -> None:
    with pytest.raises(rh.ValidationError, match="distinct non-empty strings"):
        rh.AccuracyMatrix(["a", ""])


def test_forward_transfer_names_the_task_whose_look_ahead_is_missing() -> None:
    m = rh.AccuracyMatrix(["a", "b", "c"])
    for i in range(3):
        for j in range(i + 1):
            m.record(i, j, 0.5)
    m.record(0, 1, 0.4)  # R[a][b] measured, R[b][c] not
    with pytest.raises(rh.ValidationError, match="accuracy on 'c' after 'b'"):
        m.forward_transfer([0.1, 0.1, 0.1])


@pytest.mark.parametrize("matrix", [[[0.1, 0.2], [0.3]], [[0.1, 0.2], [0.3, 0.4, 0.5]], [[0.1, 0.2], 0.3]])
def test_from_dict_rejects_rows_of_the_wrong_length(matrix: list[Any]) -> None:
    with pytest.raises(rh.ValidationError, match="'matrix' must be 2 rows of 2 values"):
        rh.AccuracyMatrix.from_dict({"task_names": ["a", "b"], "matrix": matrix})


def test_markdown_shows_three_decimals_by_default() -> None:
    m = rh.AccuracyMatrix(["a"])
    m.record(0, 0, 0.5)
    assert m.to_markdown().splitlines()[-1] == "| a | 0.500 |"


# -- admission policies ------------------------------------------------------------------------------


def _items(labels: list[str | None]) -> list[EntryInfo]:
    return [EntryInfo(i, label) for i, label in enumerate(labels)]


def test_class_balanced_state_lists_labels_unlabelled_first_then_by_name() -> None:
    policy = rh.ClassBalanced(100)
    policy.decide(_items(["b", "a", None, "", "b"]), [], rng=np.random.default_rng(0))
    state = policy.state_dict()
    # Counts are what was offered, label by label (a label seen for the first time starts from zero).
    assert state["seen"] == [[None, 1], ["", 1], ["a", 1], ["b", 2]]


def test_reservoir_counts_every_item_offered_from_zero() -> None:
    policy = rh.Reservoir(3)
    policy.decide(_items(["a"] * 2), [], rng=np.random.default_rng(0))
    assert policy.state_dict()["seen"] == 2


@pytest.mark.parametrize(
    ("policy", "state", "message"),
    [
        (
            rh.Reservoir(3),
            {"policy": "class_balanced"},
            "state is for policy 'class_balanced', not 'reservoir'",
        ),
        (rh.Reservoir(3), {"policy": "reservoir", "seen": -1}, "state field 'seen' must be an integer >= 0"),
        (rh.ClassBalanced(3), {"policy": "class_balanced", "seen": [[5, 1]], "full": []}, "list of \\[label"),
        (
            rh.ClassBalanced(3),
            {"policy": "class_balanced", "seen": [["a", 1, 2]], "full": []},
            "list of \\[label",
        ),
        (rh.ClassBalanced(3), {"policy": "class_balanced", "seen": [["a"]], "full": []}, "list of \\[label"),
        (
            rh.ClassBalanced(3),
            {"policy": "class_balanced", "seen": [["a", -2]], "full": []},
            "state field \"seen\\['a'\\]\" must be an integer",
        ),
    ],
)
def test_a_bad_policy_state_is_refused_naming_what_is_wrong(
    policy: rh.AdmissionPolicy, state: dict[str, Any], message: str
) -> None:
    with pytest.raises(rh.ValidationError, match=message):
        policy.load_state_dict(state)


@pytest.mark.parametrize("weight", [True, "2", float("nan")])
def test_priority_weights_must_be_finite_positive_numbers(weight: Any) -> None:
    with pytest.raises(rh.ConfigError, match="must be a finite number > 0"):
        rh.Priority(5, class_weights={"a": weight})
    with pytest.raises(rh.ConfigError, match="'default_weight' must be a finite number > 0"):
        rh.Priority(5, default_weight=weight)


def test_priority_fills_an_empty_memory_to_capacity() -> None:
    decision = rh.Priority(4).decide(_items(["a", "b", "c", "d", "e"]), [], rng=np.random.default_rng(0))
    assert len(decision.admit) == 4
    assert decision.evict == []
