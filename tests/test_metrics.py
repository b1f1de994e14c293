from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from rehearsal.errors import ValidationError
from rehearsal.runner.metrics import AccuracyMatrix, RunCost

# The worked example used throughout. Rows: after training on a, b, c; columns: accuracy on a, b, c.
#        a     b     c
#   a  0.90  0.20  0.10
#   b  0.95  0.80  0.30     (a went *up* after b: forgetting must use the best, not the diagonal)
#   c  0.50  0.70  0.90
FULL = [[0.90, 0.20, 0.10], [0.95, 0.80, 0.30], [0.50, 0.70, 0.90]]


def filled(rows: list[list[float]], names: tuple[str, ...] = ("a", "b", "c")) -> AccuracyMatrix:
    m = AccuracyMatrix(names)
    for i, row in enumerate(rows):
        for j, acc in enumerate(row):
            if not math.isnan(acc):
                m.record(i, j, acc)
    return m


def test_average_accuracy_is_the_mean_over_seen_tasks() -> None:
    m = filled(FULL)
    assert m.average_accuracy() == pytest.approx(0.7)  # (0.50 + 0.70 + 0.90) / 3 = 2.10 / 3
    assert m.average_accuracy("a") == pytest.approx(0.9)  # only a seen
    assert m.average_accuracy(1) == pytest.approx(0.875)  # (0.95 + 0.80) / 2


def test_backward_transfer_compares_last_row_with_the_diagonal() -> None:
    # ((0.50 - 0.90) + (0.70 - 0.80)) / 2 = (-0.40 - 0.10) / 2 = -0.25
    assert filled(FULL).backward_transfer() == pytest.approx(-0.25)


def test_forward_transfer_compares_accuracy_before_training_with_the_baseline() -> None:
    # j=1: R[0][1] - b1 = 0.20 - 0.10 = 0.10;  j=2: R[1][2] - b2 = 0.30 - 0.25 = 0.05;  mean = 0.075
    assert filled(FULL).forward_transfer([0.1, 0.1, 0.25]) == pytest.approx(0.075)


def test_forgetting_uses_the_best_earlier_accuracy() -> None:
    m = filled(FULL)
    # a: max(R[0][0], R[1][0]) - R[2][0] = max(0.90, 0.95) - 0.50 = 0.45
    # b: R[1][1] - R[2][1] = 0.80 - 0.70 = 0.10
    assert m.per_task_forgetting() == pytest.approx({"a": 0.45, "b": 0.10})
    assert m.forgetting() == pytest.approx(0.275)  # (0.45 + 0.10) / 2, not -BWT = 0.25


def test_partial_matrix_is_summarised_over_completed_rows() -> None:
    # Row c holds only a's accuracy, so two rows are completed and the stream is read as [a, b].
    nan = math.nan
    m = filled([FULL[0], FULL[1], [0.5, nan, nan]])
    assert m.completed_tasks == 2
    assert m.average_accuracy() == pytest.approx(0.875)  # (0.95 + 0.80) / 2
    assert m.backward_transfer() == pytest.approx(0.05)  # 0.95 - 0.90
    assert m.forgetting() == pytest.approx(-0.05)  # max(0.90) - 0.95
    assert m.forward_transfer([0.0, 0.1, 0.0]) == pytest.approx(0.1)  # R[0][1] - b1 = 0.20 - 0.10


def test_average_accuracy_after_an_incomplete_row_names_the_missing_tasks() -> None:
    m = filled([FULL[0], FULL[1], [0.5, math.nan, math.nan]])
    with pytest.raises(ValidationError, match=r"after 'c' needs accuracies on \['b', 'c'\]"):
        m.average_accuracy("c")


def test_a_gap_in_an_earlier_row_stops_the_completed_rows_there() -> None:
    m = filled([[0.9, math.nan, math.nan], [math.nan, 0.8, math.nan], FULL[2]])
    assert m.completed_tasks == 1
    assert m.average_accuracy() == pytest.approx(0.9)


def test_one_task_has_accuracy_but_no_transfer_or_forgetting() -> None:
    m = AccuracyMatrix(["only"])
    m.record("only", "only", 0.6)
    assert m.average_accuracy() == pytest.approx(0.6)
    with pytest.raises(
        ValidationError, match=r"backward transfer needs at least 2 completed row\(s\).*have 1"
    ):
        m.backward_transfer()
    with pytest.raises(ValidationError, match="forgetting needs at least 2 completed"):
        m.forgetting()
    with pytest.raises(ValidationError, match="forward transfer needs at least 2 completed"):
        m.forward_transfer([0.5])


def test_empty_matrix_has_no_average_accuracy() -> None:
    with pytest.raises(ValidationError, match="average accuracy needs at least 1 completed row"):
        AccuracyMatrix(["a", "b"]).average_accuracy()


def test_forward_transfer_without_the_look_ahead_measurement_is_rejected() -> None:
    nan = math.nan
    m = filled([[0.9, nan, nan], [0.8, 0.7, nan], [0.6, 0.6, 0.6]])
    with pytest.raises(ValidationError, match=r"accuracy on 'b' after 'a' .*not recorded"):
        m.forward_transfer([0.1, 0.1, 0.1])


@pytest.mark.parametrize(
    ("baseline", "message"),
    [([0.1, 0.1], r"one accuracy per task \(3\), got 2"), ([0.1, 1.2, 0.1], r"baseline\[1\] must be in")],
)
def test_bad_baseline_is_rejected(baseline: list[float], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        filled(FULL).forward_transfer(baseline)


@pytest.mark.parametrize("accuracy", [1.5, -0.1, math.nan, "0.5", None])
def test_accuracy_outside_unit_interval_is_rejected(accuracy: Any) -> None:
    with pytest.raises(ValidationError, match="accuracy must be"):
        AccuracyMatrix(["a"]).record(0, 0, accuracy)


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ("z", "unknown task 'z'"),
        (3, "task index 3 out of range"),
        (-1, "task index -1"),
        (True, "name or an index"),
    ],
)
def test_unknown_task_is_rejected(task: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        AccuracyMatrix(["a", "b", "c"]).record(task, 0, 0.5)


@pytest.mark.parametrize(
    ("names", "message"), [([], "at least one task"), (["a", "a"], "distinct non-empty")]
)
def test_bad_task_names_are_rejected(names: list[str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        AccuracyMatrix(names)


def test_record_by_name_or_index_and_overwrite() -> None:
    m = AccuracyMatrix(["a", "b"])
    m.record("b", "a", 0.3)
    m.record(1, 0, 0.4)
    assert m.matrix[1, 0] == 0.4
    assert np.isnan(m.matrix[0, 0])


def test_matrix_is_a_copy() -> None:
    m = filled(FULL)
    m.matrix[0, 0] = 0.0
    assert m.matrix[0, 0] == 0.9


def test_dict_round_trip_through_json_keeps_unmeasured_cells() -> None:
    m = filled([FULL[0], [0.5, math.nan, math.nan]])
    data = json.loads(json.dumps(m.to_dict()))
    assert data["matrix"][1] == [0.5, None, None]
    assert AccuracyMatrix.from_dict(data) == m


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"task_names": ["a"]}, "expected keys"),
        ({"task_names": ["a", "b"], "matrix": [[0.1, 0.2]]}, "'matrix' must be 2 rows of 2 values"),
        ({"task_names": ["a"], "matrix": [[2.0]]}, r"accuracy must be in \[0, 1\], got 2.0"),
    ],
)
def test_from_dict_rejects_malformed_data(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        AccuracyMatrix.from_dict(data)


def test_markdown_table_shows_unmeasured_cells_as_dashes() -> None:
    m = AccuracyMatrix(["a", "b"])
    m.record("a", "a", 0.9)
    m.record("b", "a", 0.75)
    m.record("b", "b", 0.5)
    assert m.to_markdown(digits=2) == (
        "| after \\ on | a | b |\n|---|---|---|\n| a | 0.90 | — |\n| b | 0.75 | 0.50 |"
    )


def test_run_cost_round_trips_through_json() -> None:
    cost = RunCost(
        wall_seconds=12.5,
        train_examples=1000,
        replayed_examples=250,
        replayed_tokens=9000,
        memory_bytes_on_disk=4096,
    )
    assert RunCost.from_dict(json.loads(json.dumps(cost.to_dict()))) == cost


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"wall_seconds": -1.0}, "'wall_seconds' must be a non-negative float"),
        ({"wall_seconds": math.inf}, "'wall_seconds' must be a non-negative float"),
        ({"train_examples": -3}, "'train_examples' must be a non-negative int, got -3"),
        ({"replayed_tokens": 1.5}, "'replayed_tokens' must be a non-negative int"),
        ({"memory_bytes_on_disk": True}, "'memory_bytes_on_disk' must be a non-negative int"),
    ],
)
def test_run_cost_rejects_negative_or_mistyped_values(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RunCost(**kwargs)


def test_run_cost_from_dict_rejects_unknown_fields() -> None:
    with pytest.raises(ValidationError, match=r"unknown RunCost fields \['gpu_hours'\]"):
        RunCost.from_dict({"gpu_hours": 1.0})
