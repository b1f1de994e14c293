from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from rehearsal import TaskStream
from rehearsal.errors import ValidationError
from rehearsal.runner.sentiment import SENTIMENT_LABELS, SENTIMENT_TASKS, load_sentiment_stream


@pytest.fixture(scope="module")
def sentiment() -> TaskStream:
    return load_sentiment_stream()


def test_every_task_has_the_same_three_labels(sentiment: TaskStream) -> None:
    assert tuple(t.name for t in sentiment.tasks) == SENTIMENT_TASKS
    assert all(task.labels == SENTIMENT_LABELS for task in sentiment.tasks)
    assert sentiment.labels == SENTIMENT_LABELS  # one 3-way head for the whole stream


def test_bundled_sizes_are_the_documented_ones(sentiment: TaskStream) -> None:
    for task in sentiment.tasks:
        assert Counter(ex.label for ex in task.train) == dict.fromkeys(SENTIMENT_LABELS, 400)
        assert Counter(ex.label for ex in task.test) == dict.fromkeys(SENTIMENT_LABELS, 100)
    assert sum(len(t.train) for t in sentiment.tasks) == 4800


def test_no_text_is_in_two_splits_or_two_tasks(sentiment: TaskStream) -> None:
    texts = [ex.text for task in sentiment.tasks for ex in task.train + task.test]
    assert len(texts) == len(set(texts))
    assert all(
        ex.text.strip() and "&amp;" not in ex.text for ex in (e for t in sentiment.tasks for e in t.train)
    )


def test_examples_carry_their_task(sentiment: TaskStream) -> None:
    for task in sentiment.tasks:
        assert {ex.task for ex in task.train + task.test} == {task.name}


def test_caps_subsample_per_task_and_label_deterministically() -> None:
    first = load_sentiment_stream(max_train_per_class=6, max_test_per_class=2, seed=1)
    assert first == load_sentiment_stream(max_train_per_class=6, max_test_per_class=2, seed=1)
    assert first != load_sentiment_stream(max_train_per_class=6, max_test_per_class=2, seed=2)
    for task in first.tasks:
        assert set(Counter(ex.label for ex in task.train).values()) == {6}
        assert set(Counter(ex.label for ex in task.test).values()) == {2}


def test_smaller_caps_take_a_subset_and_ignore_other_tasks() -> None:
    small = load_sentiment_stream(max_train_per_class=5, tasks=["products"]).task("products")
    large = load_sentiment_stream(max_train_per_class=20).task("products")
    assert set(small.train) < set(large.train)


def test_tasks_argument_selects_and_orders_tasks() -> None:
    stream = load_sentiment_stream(
        max_train_per_class=2, max_test_per_class=1, tasks=["editorials", "tweets"]
    )
    assert [t.name for t in stream.tasks] == ["editorials", "tweets"]
    assert stream.labels == SENTIMENT_LABELS


@pytest.mark.parametrize("tasks", [["news"], [], ["tweets", "tweets"]])
def test_bad_task_selection_is_rejected(tasks: list[str]) -> None:
    with pytest.raises(ValidationError, match="tasks must be distinct names"):
        load_sentiment_stream(tasks=tasks)


@pytest.mark.parametrize("cap", [0, 2.5, True])
def test_bad_cap_is_rejected(cap: Any) -> None:
    with pytest.raises(ValidationError, match="'max_test_per_class' must be a positive int"):
        load_sentiment_stream(max_test_per_class=cap)
