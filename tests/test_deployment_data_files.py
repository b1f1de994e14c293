"""The files an update or a shadow run reads: JSON lines, and CSV as ``rehearsal ingest`` reads it."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from rehearsal.deployment.examples import read_examples
from rehearsal.errors import ValidationError
from rehearsal.examples import Example


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_a_csv_file_gives_the_same_examples_as_its_json_lines(tmp_path: Path) -> None:
    csv_file = _write(
        tmp_path / "week.csv",
        "text,label,task,tags\n"
        '"Refund, please",refund,billing,"safety, urgent"\n'
        "Where is my parcel?,late,,\n",
    )
    jsonl = _write(
        tmp_path / "week.jsonl",
        '{"text": "Refund, please", "label": "refund", "task": "billing", "tags": ["safety", "urgent"]}\n'
        '{"text": "Where is my parcel?", "label": "late"}\n',
    )
    expected = [
        Example("Refund, please", "refund", "billing", tags=("safety", "urgent")),
        Example("Where is my parcel?", "late", "shipping"),
    ]
    assert read_examples(csv_file, task="shipping") == expected
    assert read_examples(jsonl, task="shipping") == expected


def test_a_gzipped_csv_and_unlabelled_requests(tmp_path: Path) -> None:
    file = tmp_path / "requests.csv.gz"
    with gzip.open(file, "wt", encoding="utf-8") as fh:
        fh.write("text,label\nhello,\n")
    assert read_examples(file, labelled=False) == [Example("hello", None)]
    with pytest.raises(ValidationError, match=r"requests\.csv\.gz row 1 has no 'label'"):
        read_examples(file)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("words,label\nhi,a\n", "the CSV header needs a 'text' column"),
        ("text,label\nhi,a,extra\n", r"bad\.csv row 1: more values than header columns"),
        ('text,label\n"never closed,a\n', "malformed CSV"),
        ("text,label\n", "holds no examples"),
    ],
)
def test_a_bad_csv_is_a_clear_error(tmp_path: Path, content: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        read_examples(_write(tmp_path / "bad.csv", content))


def test_a_csv_under_another_name_is_named_as_the_likely_mistake(tmp_path: Path) -> None:
    file = _write(tmp_path / "week.jsonl", "text,label\nhi,a\n")
    with pytest.raises(ValidationError, match=r"line 1: not valid JSON .*; a CSV file must end in \.csv"):
        read_examples(file)
    with pytest.raises(ValidationError, match=r"cannot tell the format of 'week\.txt'"):
        read_examples(_write(tmp_path / "week.txt", "text,label\nhi,a\n"))
