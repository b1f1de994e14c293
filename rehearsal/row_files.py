"""Rows of a user's data file as dicts: JSON lines (one object per line) or CSV with a header row.

One reader for every place that takes a user's file (``rehearsal ingest``, a run's ``data = ...``), so a
file that one verb accepts the other accepts too, and a bad row is named the same way everywhere: the
file's name, then ``line N`` (JSON lines) or ``row N`` (CSV data rows, header excluded). A ``.gz`` suffix
after either kind is decompressed. Text must be UTF-8; a byte-order mark at the start is dropped; a JSON
escape that makes no text (a lone surrogate, ``"\\ud800"``) is refused.
"""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast

from rehearsal.errors import ValidationError

__all__ = ["CSV_SUFFIXES", "JSONL_SUFFIXES", "read_rows", "row_file_kind", "row_name"]

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
CSV_SUFFIXES = (".csv",)


def row_file_kind(path: Path) -> str:
    """``"jsonl"`` or ``"csv"`` from the file's suffix (before a ``.gz``); anything else is refused."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    suffix = suffixes[-1] if suffixes else ""
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    if suffix in CSV_SUFFIXES:
        return "csv"
    raise ValidationError(
        f"cannot tell the format of {path.name!r}: use a .jsonl or .csv file (optionally .gz)"
    )


def row_name(path: Path, kind: str, position: int) -> str:
    """How an error names a row: ``data.csv row 3``, ``data.jsonl line 7``."""
    return f"{path.name} {'row' if kind == 'csv' else 'line'} {position}"


def read_rows(path: Path, kind: str | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(position, row)`` for every record of ``path``; blank JSON lines are skipped."""
    kind = kind or row_file_kind(path)
    if kind == "csv":
        return _csv_rows(path)
    if kind == "jsonl":
        return _jsonl_rows(path)
    raise ValidationError(f"unknown row file kind {kind!r}")


def _open(path: Path) -> BinaryIO:
    if path.suffix.lower() == ".gz":
        return cast(BinaryIO, gzip.open(path, "rb"))
    return path.open("rb")


def _lines(path: Path) -> Iterator[str]:
    """The file's lines, decoded one by one so that a bad byte is named by its line (a newline byte never
    occurs inside a multi-byte UTF-8 character)."""
    with _open(path) as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValidationError(
                    f"{path.name} line {number}: not UTF-8 text (byte {raw[exc.start]:#04x} at "
                    f"column {exc.start + 1}); save the file as UTF-8"
                ) from None
            yield line.removeprefix("\ufeff") if number == 1 else line


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, line in enumerate(_lines(path), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            # A first line with commas that is not JSON is most likely a CSV header under another name.
            hint = "; a CSV file must end in .csv" if number == 1 and "," in line else ""
            raise ValidationError(
                f"{row_name(path, 'jsonl', number)}: not valid JSON ({exc.msg}){hint}"
            ) from None
        if not isinstance(item, dict):
            raise ValidationError(
                f"{row_name(path, 'jsonl', number)}: expected a JSON object, got {type(item).__name__}"
            )
        _check_text(item, row_name(path, "jsonl", number))
        yield number, item


def _check_text(item: dict[str, Any], where: str) -> None:
    """ValidationError for a row holding a lone surrogate (JSON's ``"\\ud800"`` escape): not text in any
    encoding, so the tokenizer, the memory and the audit log would each fail on it later (and after a
    run folder or a memory had been made)."""
    try:
        json.dumps(item, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(exc.object[exc.start])
        raise ValidationError(
            f"{where}: is not valid Unicode text (a lone surrogate, \\u{code:04x}); fix the file's escapes"
        ) from None


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    # strict: a quote that is never closed is an error at the end of the file, where the lenient reader
    # would silently make the rest of the file one record.
    reader = csv.DictReader(_lines(path), strict=True)
    number, started = 0, 2  # data rows so far; the line where the next row starts
    try:
        for row in reader:
            number += 1
            if None in row:
                raise ValidationError(f"{row_name(path, 'csv', number)}: more values than header columns")
            yield number, dict(row)
            started = reader.line_num + 1
    except csv.Error as exc:
        raise ValidationError(
            f"{row_name(path, 'csv', number + 1)} (from line {started}): malformed CSV ({exc});"
            " is a quote left open?"
        ) from None
