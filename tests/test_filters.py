"""parse_where + the SQLite compiler: filters compile to SQL that selects exactly the matching entries,
and typos fail loudly."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import pytest

from rehearsal.errors import ValidationError
from rehearsal.store.sqlite.where import compile_where as compile_tree
from rehearsal.store.where import parse_where

ROWS = [
    (0, "acme", "billing", 1, ["safety"]),
    (1, "acme", "billing", 2, []),
    (2, "globex", "shipping", "x", ["safety", "pii"]),
    (3, "globex", None, None, []),
    (4, "acme", "shipping", 1, ["pii"]),
]


@pytest.fixture(scope="module")
def conn() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE entries (id INTEGER PRIMARY KEY, tenant TEXT, task TEXT, label, tags TEXT)")
    db.executemany("INSERT INTO entries VALUES (?, ?, ?, ?, ?)", [(*r[:4], json.dumps(r[4])) for r in ROWS])
    return db


def select(conn: sqlite3.Connection, where: Any) -> list[int]:
    clause, params = compile_where(where)
    return [r[0] for r in conn.execute(f"SELECT id FROM entries WHERE {clause} ORDER BY id", params)]


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        (None, [0, 1, 2, 3, 4]),
        ({}, [0, 1, 2, 3, 4]),
        ({"task": "billing"}, [0, 1]),
        ({"task": {"$ne": "billing"}}, [2, 3, 4]),
        ({"label": 1}, [0, 4]),
        ({"label": {"$in": [2, "x"]}}, [1, 2]),
        ({"label": {"$nin": [1]}}, [1, 2, 3]),
        ({"label": {"$in": []}}, []),
        ({"label": {"$nin": []}}, [0, 1, 2, 3, 4]),
        ({"tenant": "acme", "task": "shipping"}, [4]),
        ({"tags": "safety"}, [0, 2]),
        ({"tags": {"$in": ["pii", "nothing"]}}, [2, 4]),
        ({"tags": {"$ne": "safety"}}, [1, 3, 4]),
        ({"tags": {"$nin": ["safety", "pii"]}}, [1, 3]),
        ({"id": {"$lt": 2}}, [0, 1]),
        ({"id": {"$gte": 2, "$lte": 3}}, [2, 3]),
        ({"id": {"$in": [4, 0]}}, [0, 4]),
        # Label ranges compare int labels only: row 2's name "x" and row 3's missing label never match.
        ({"label": {"$gte": 1}}, [0, 1, 4]),
        ({"label": {"$gt": 1, "$lte": 2}}, [1]),
        ({"label": {"$lt": 100}}, [0, 1, 4]),
    ],
)
def test_filter_selects_exactly_the_matching_entries(
    conn: sqlite3.Connection, where: Any, expected: list[int]
) -> None:
    assert select(conn, where) == expected


@pytest.mark.parametrize(
    ("where", "match"),
    [
        ({"colour": "red"}, "unknown filter field 'colour'"),
        ({"task": {"$regex": "b.*"}}, r"unknown operator '\$regex' for filter field 'task'"),
        ({"task": {"$lt": 3}}, r"unknown operator '\$lt' for filter field 'task'"),
        ({"label": {"$lt": "x"}}, "filter value for 'label' must be int, got 'x'"),
        ({"task": {}}, "empty condition for filter field 'task'"),
        ({"task": {"$in": "billing"}}, r"\$in for filter field 'task' needs a list"),
        ({"label": True}, "must be str or int, got True"),
        ({"label": 1.5}, "must be str or int, got 1.5"),
        ({"id": {"$lt": "3"}}, "filter value for 'id' must be int"),
        ({"tags": {"$in": [None]}}, "must be str or int, got None"),
        (["task", "billing"], "'where' must be a mapping, got list"),
    ],
)
def test_bad_filter_raises_validation_error(where: Any, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        compile_where(where)


def test_values_are_bound_as_parameters_not_spliced_into_sql(conn: sqlite3.Connection) -> None:
    clause, params = compile_where({"task": "x') OR 1=1 --"})
    assert "OR 1=1" not in clause
    assert params == ["x') OR 1=1 --"]
    assert select(conn, {"task": "x') OR 1=1 --"}) == []


def compile_where(where: Any) -> tuple[str, list[Any]]:
    """A filter as the SQLite record store runs it: parsed to the neutral tree, then compiled."""
    return compile_tree(parse_where(where))
