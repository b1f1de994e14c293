from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from rehearsal.errors import NotFoundError, ValidationError
from rehearsal.runner.tasks import (
    WORDNET_TASKS,
    Example,
    Task,
    TaskStream,
    load_jsonl_stream,
    load_wordnet_stream,
)


@pytest.fixture(scope="module")
def wordnet() -> TaskStream:
    return load_wordnet_stream()


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


# --- the bundled WordNet stream ---------------------------------------------------------------------------


def test_wordnet_has_five_tasks_and_45_classes(wordnet: TaskStream) -> None:
    assert tuple(t.name for t in wordnet.tasks) == WORDNET_TASKS
    assert [len(t.labels) for t in wordnet.tasks] == [5, 7, 14, 15, 4]
    assert len(wordnet.labels) == len(set(wordnet.labels)) == 45


def test_wordnet_tasks_hold_the_documented_classes(wordnet: TaskStream) -> None:
    assert wordnet.task("living").labels == (
        "noun.animal",
        "noun.body",
        "noun.food",
        "noun.person",
        "noun.plant",
    )
    assert "noun.Tops" in wordnet.task("abstract").labels
    assert all(label.startswith("verb.") for label in wordnet.task("verbs").labels)
    assert wordnet.task("modifiers").labels == ("adj.all", "adj.pert", "adj.ppl", "adv.all")


def test_wordnet_respects_the_bundled_caps(wordnet: TaskStream) -> None:
    for task in wordnet.tasks:
        train, test = Counter(ex.label for ex in task.train), Counter(ex.label for ex in task.test)
        assert set(train) == set(test) == set(task.labels)
        assert max(train.values()) <= 300
        assert max(test.values()) <= 80
    assert sum(len(t.train) for t in wordnet.tasks) == 12322
    assert sum(len(t.test) for t in wordnet.tasks) == 3270


def test_wordnet_no_text_is_in_both_splits_of_a_class(wordnet: TaskStream) -> None:
    for task in wordnet.tasks:
        train = {(ex.label, ex.text) for ex in task.train}
        assert not train & {(ex.label, ex.text) for ex in task.test}


def test_wordnet_examples_carry_their_task_and_nonempty_text(wordnet: TaskStream) -> None:
    for task in wordnet.tasks:
        assert all(ex.task == task.name and ex.text.strip() for ex in task.train + task.test)


def test_labels_are_in_task_order_then_sorted(wordnet: TaskStream) -> None:
    assert wordnet.labels == tuple(label for task in wordnet.tasks for label in sorted(task.labels))
    assert wordnet.label_id("noun.animal") == 0
    assert wordnet.label_id("adv.all") == 44


def test_caps_subsample_each_class() -> None:
    stream = load_wordnet_stream(max_train_per_class=7, max_test_per_class=3)
    for task in stream.tasks:
        assert set(Counter(ex.label for ex in task.train).values()) == {7}
        assert set(Counter(ex.label for ex in task.test).values()) == {3}


def test_subsample_is_deterministic_and_depends_on_seed() -> None:
    first = load_wordnet_stream(max_train_per_class=5, max_test_per_class=2, seed=3)
    again = load_wordnet_stream(max_train_per_class=5, max_test_per_class=2, seed=3)
    other = load_wordnet_stream(max_train_per_class=5, max_test_per_class=2, seed=4)
    assert first == again
    assert first.tasks[0].train != other.tasks[0].train


def test_a_class_draw_does_not_depend_on_the_selected_tasks() -> None:
    alone = load_wordnet_stream(max_train_per_class=5, tasks=["verbs"])
    together = load_wordnet_stream(max_train_per_class=5)
    assert alone.task("verbs") == together.task("verbs")


def test_smaller_caps_are_subsets_of_larger_caps() -> None:
    small = load_wordnet_stream(max_train_per_class=5, tasks=["living"]).task("living")
    large = load_wordnet_stream(max_train_per_class=20, tasks=["living"]).task("living")
    assert set(small.train) < set(large.train)


def test_tasks_argument_selects_and_orders_tasks() -> None:
    stream = load_wordnet_stream(max_train_per_class=2, max_test_per_class=1, tasks=["verbs", "living"])
    assert [t.name for t in stream.tasks] == ["verbs", "living"]
    assert stream.labels[0] == "verb.body"
    assert len(stream.labels) == 20


@pytest.mark.parametrize("tasks", [["nouns"], [], ["living", "living"]])
def test_bad_task_selection_is_rejected(tasks: list[str]) -> None:
    with pytest.raises(ValidationError, match="tasks must be distinct names"):
        load_wordnet_stream(tasks=tasks)


@pytest.mark.parametrize("cap", [0, -1, 2.5, True])
def test_bad_cap_is_rejected(cap: Any) -> None:
    with pytest.raises(ValidationError, match="'max_train_per_class' must be a positive int"):
        load_wordnet_stream(max_train_per_class=cap)


def test_unknown_label_and_task_raise_not_found(wordnet: TaskStream) -> None:
    with pytest.raises(NotFoundError, match=r"unknown label 'noun\.dragon'"):
        wordnet.label_id("noun.dragon")
    with pytest.raises(NotFoundError, match="unknown task 'nouns'"):
        wordnet.task("nouns")


def test_stream_rejects_duplicate_task_names_and_wrong_labels() -> None:
    task = Task.from_examples("a", [Example("x", "l1", "a")], [Example("y", "l1", "a")])
    with pytest.raises(ValidationError, match="task names must be unique"):
        TaskStream.from_tasks([task, task])
    with pytest.raises(ValidationError, match="labels must be"):
        TaskStream((task,), ("l2",))


# --- a user's own JSON lines ------------------------------------------------------------------------------


def test_jsonl_round_trip_keeps_explicit_splits_and_first_appearance_order(tmp_path: Path) -> None:
    rows = [
        {"text": "t1", "label": "b", "task": "second", "split": "train"},
        {"text": "t2", "label": "a", "task": "first", "split": "train"},
        {"text": "t3", "label": "a", "task": "first", "split": "test"},
        {"text": "t4", "label": "c", "task": "second", "split": "test"},
    ]
    stream = load_jsonl_stream(write_jsonl(tmp_path / "s.jsonl", rows))
    assert [t.name for t in stream.tasks] == ["second", "first"]
    assert stream.labels == ("b", "c", "a")
    assert stream.task("second").train == (Example("t1", "b", "second"),)
    assert stream.task("second").test == (Example("t4", "c", "second"),)
    assert stream.task("first").test == (Example("t3", "a", "first"),)


def test_jsonl_reads_gzip_and_custom_field_names(tmp_path: Path) -> None:
    rows = [{"q": f"q{i}", "y": i % 2, "domain": "d"} for i in range(10)]
    path = tmp_path / "s.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    stream = load_jsonl_stream(path, text_field="q", label_field="y", task_field="domain")
    assert stream.labels == ("0", "1")  # int labels become strings
    assert len(stream.task("d").train) + len(stream.task("d").test) == 10


def test_jsonl_without_split_is_split_per_class_by_seeded_fraction(tmp_path: Path) -> None:
    rows = [{"text": f"{label}{i}", "label": label, "task": "t"} for label in "ab" for i in range(10)]
    path = write_jsonl(tmp_path / "s.jsonl", rows)
    stream = load_jsonl_stream(path, test_fraction=0.3, seed=1)
    test = stream.task("t").test
    assert Counter(ex.label for ex in test) == {"a": 3, "b": 3}
    assert load_jsonl_stream(path, test_fraction=0.3, seed=1) == stream
    assert load_jsonl_stream(path, test_fraction=0.3, seed=2).task("t").test != test


def test_jsonl_missing_field_names_the_line(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "s.jsonl", [{"text": "x", "label": "a", "task": "t"}, {"text": "y", "task": "t"}]
    )
    with pytest.raises(ValidationError, match="line 2: missing field 'label'"):
        load_jsonl_stream(path)


def test_jsonl_bad_json_names_the_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "s.jsonl", [{"text": "x", "label": "a", "task": "t"}, "", "{not json"])
    with pytest.raises(ValidationError, match="line 3: not valid JSON"):
        load_jsonl_stream(path)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ([1, 2], "line 1: expected a JSON object"),
        ({"text": "", "label": "a", "task": "t"}, "line 1: field 'text' must be a non-empty string"),
        ({"text": "x", "label": None, "task": "t"}, "line 1: field 'label' must be a non-empty string"),
        (
            {"text": "x", "label": "a", "task": "t", "split": "dev"},
            "line 1: 'split' must be 'train' or 'test'",
        ),
    ],
)
def test_jsonl_bad_values_name_the_line(tmp_path: Path, row: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        load_jsonl_stream(write_jsonl(tmp_path / "s.jsonl", [row]))


def test_jsonl_empty_file_is_rejected(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "s.jsonl", ["", "  "])
    with pytest.raises(ValidationError, match="holds no examples"):
        load_jsonl_stream(path)


def test_jsonl_task_without_test_examples_is_rejected(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "s.jsonl", [{"text": "x", "label": "a", "task": "t", "split": "train"}])
    with pytest.raises(
        ValidationError, match="task 't' needs train and test examples, has 1 train and 0 test"
    ):
        load_jsonl_stream(path)


def test_jsonl_missing_file_raises_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="no such file"):
        load_jsonl_stream(tmp_path / "absent.jsonl")


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.5])
def test_jsonl_test_fraction_out_of_range_is_rejected(tmp_path: Path, fraction: float) -> None:
    with pytest.raises(ValidationError, match="'test_fraction' must be in"):
        load_jsonl_stream(tmp_path / "s.jsonl", test_fraction=fraction)


def test_a_csv_stream_reads_like_the_same_rows_as_json_lines(tmp_path: Path) -> None:
    rows = [
        {"text": f"{label} number {i}", "label": label, "task": task}
        for task, labels in (("billing", ("refund", "invoice")), ("shipping", ("late", "damaged")))
        for label in labels
        for i in range(5)
    ]
    csv_path = tmp_path / "tickets.csv"
    csv_path.write_text(
        "\ufefftext,label,task\n" + "".join(f'"{r["text"]}",{r["label"]},{r["task"]}\n' for r in rows),
        encoding="utf-8",
    )
    from_csv = load_jsonl_stream(csv_path, seed=3)
    assert from_csv == load_jsonl_stream(write_jsonl(tmp_path / "tickets.jsonl", rows), seed=3)
    assert [t.name for t in from_csv.tasks] == ["billing", "shipping"]
    gz = tmp_path / "tickets.csv.gz"
    gz.write_bytes(gzip.compress(csv_path.read_bytes()))
    assert load_jsonl_stream(gz, seed=3) == from_csv


def test_a_bad_csv_row_is_named_by_file_and_row(tmp_path: Path) -> None:
    path = tmp_path / "tickets.csv"
    path.write_text("text,label,task\nhello,a,t\n,b,t\n", encoding="utf-8")
    with pytest.raises(ValidationError, match=r"tickets\.csv row 2: field 'text' must be a non-empty string"):
        load_jsonl_stream(path)
    path.write_text('text,label,task\n"never closed,a,t\n', encoding="utf-8")
    with pytest.raises(ValidationError, match="malformed CSV"):
        load_jsonl_stream(path)


def test_a_stream_file_of_unknown_kind_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tickets.txt"
    path.write_text("text,label,task\n", encoding="utf-8")
    with pytest.raises(ValidationError, match=r"cannot tell the format of 'tickets\.txt'"):
        load_jsonl_stream(path)
