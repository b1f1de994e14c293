"""Anytime metrics against values computed by hand on a tiny three-task probe trace."""

import pytest

from rehearsal.errors import ValidationError
from rehearsal.runner.anytime import ProbeTrace, anytime_auc, anytime_summary, stability_gaps


def _trace() -> ProbeTrace:
    """Tasks a, b, c begin at steps 0, 4 and 8; probes every 2 steps from step 2 to 12."""
    trace = ProbeTrace(["a", "b", "c"])
    trace.start_task("a", 0)
    trace.record(2, {"a": 0.5})
    trace.start_task("b", 4)
    trace.record(4, {"a": 0.8})
    trace.record(6, {"a": 0.4, "b": 0.5})
    trace.start_task("c", 8)
    trace.record(8, {"a": 0.6, "b": 0.7})
    trace.record(10, {"a": 0.2, "b": 0.4, "c": 0.5})
    trace.record(12, {"a": 0.7, "b": 0.7, "c": 0.8})
    return trace


def test_anytime_auc_is_the_step_weighted_mean_of_the_seen_task_accuracy():
    # Seen-task means 0.5, 0.8, 0.45, 0.65, 1.1/3, 2.2/3 at steps 2..12; trapezoids of width 2 over 10 steps.
    area = (0.5 + 0.8) + (0.8 + 0.45) + (0.45 + 0.65) + (0.65 + 1.1 / 3) + (1.1 / 3 + 2.2 / 3)
    assert anytime_auc(_trace()) == pytest.approx(area / 10)


def test_anytime_auc_of_a_single_probe_is_its_value_and_none_without_one():
    trace = ProbeTrace(["a"])
    assert anytime_auc(trace) is None
    trace.record(3, {"a": 0.25})
    assert anytime_auc(trace) == pytest.approx(0.25)


def test_stability_gap_that_does_not_recover_within_its_task():
    b = stability_gaps(_trace(), last_step=12)[0]
    assert (b.task, b.start_step) == ("b", 4)
    assert b.start_accuracy == pytest.approx(0.8)
    assert b.min_accuracy == pytest.approx(0.4)
    assert b.depth == pytest.approx(0.4)
    assert b.min_after == 2
    assert b.recovered_after is None
    assert b.end_accuracy == pytest.approx(0.6)


def test_stability_gap_over_two_old_tasks_recovers_at_the_first_probe_back_at_the_start_value():
    c = stability_gaps(_trace(), last_step=12)[1]
    assert c.start_accuracy == pytest.approx(0.65)  # mean of a 0.6 and b 0.7 at step 8
    assert c.depth == pytest.approx(0.35)  # down to (0.2 + 0.4) / 2 at step 10
    assert c.min_after == 2
    assert c.recovered_after == 4  # (0.7 + 0.7) / 2 >= 0.65 at step 12


def test_a_task_that_costs_old_tasks_nothing_has_a_zero_gap_recovered_at_once():
    trace = ProbeTrace(["a", "b"])
    trace.start_task("a", 0)
    trace.start_task("b", 2)
    for step, value in [(2, 0.5), (4, 0.6), (6, 0.7)]:
        trace.record(step, {"a": value, **({"b": 0.1} if step > 2 else {})})
    (gap,) = stability_gaps(trace, last_step=6)
    assert gap.depth == 0.0
    assert gap.recovered_after == 0


def test_a_task_without_a_probe_at_its_start_has_no_gap():
    trace = ProbeTrace(["a", "b"])
    trace.start_task("a", 0)
    trace.start_task("b", 3)
    trace.record(2, {"a": 0.9})
    trace.record(4, {"a": 0.1, "b": 0.5})
    assert stability_gaps(trace, last_step=4) == []


def test_probe_steps_never_go_back():
    trace = ProbeTrace(["a"])
    trace.record(4, {"a": 0.5})
    with pytest.raises(ValidationError, match="never decrease: 2 after 4"):
        trace.record(2, {"a": 0.5})


def test_a_probe_of_an_unknown_task_is_rejected():
    with pytest.raises(ValidationError, match="unknown tasks \\['z'\\]"):
        ProbeTrace(["a"]).record(1, {"z": 0.5})


def test_probe_trace_round_trips_through_its_dict():
    trace = _trace()
    assert ProbeTrace.from_dict(trace.to_dict()) == trace


def test_summary_reports_online_accuracy_mean_gap_depth_and_probe_share():
    summary = anytime_summary(
        _trace(), correct=3, tested=12, last_step=12, probe_seconds=1.0, wall_seconds=20.0
    )
    assert summary["online_accuracy"] == pytest.approx(0.25)
    assert summary["mean_gap_depth"] == pytest.approx((0.4 + 0.35) / 2)
    assert summary["probe_share"] == pytest.approx(0.05)
    assert [g["task"] for g in summary["stability_gaps"]] == ["b", "c"]
