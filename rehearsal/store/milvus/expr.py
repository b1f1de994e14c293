"""The where-filter tree compiled to a Milvus boolean expression over the index's scalar fields.

Nothing a user wrote reaches the expression as text. Task, label names and tags are stored and compared
as digests (fixed-length hex), so a value of any length or alphabet is safe and fits the schema; tenants
are validated names, quoted and escaped all the same; ids and int labels are Python ints written out by
``int``. Semantics follow the SQL backends: "any of nothing" matches nothing, "none of nothing" matches
everything, an entry with no task or label is "not equal" to any value, and a label range compares int
labels only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from rehearsal.errors import ValidationError
from rehearsal.store.where import Condition, Where

__all__ = ["NOTHING", "compile_where", "digest", "id_list", "quote"]

NOTHING = None
"""What :func:`compile_where` returns for a filter that no entry can match (so nothing is searched)."""

_RANGE = {"lt": "<", "lte": "<=", "gt": ">", "gte": ">="}
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def digest(value: str) -> str:
    """The stored form of a task, label name or tag: 128 bits of BLAKE2b, as 32 hex characters."""
    return hashlib.blake2b(value.encode("utf-8"), digest_size=16).hexdigest()


def quote(value: str) -> str:
    """A Milvus string literal for ``value``; control characters it cannot escape are refused."""
    out = []
    for ch in value:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            raise ValidationError(f"cannot put control character {ch!r} in a Milvus filter")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def id_list(ids: Iterable[int]) -> str:
    """``[1, 2, 3]`` for an ``in`` clause (callers never pass an empty list: see compile_where)."""
    return "[" + ", ".join(str(int(i)) for i in ids) + "]"


def _strings(values: Iterable[str]) -> str:
    return "[" + ", ".join(quote(v) for v in values) + "]"


def _clause(condition: Condition) -> str | None:
    """One condition as an expression; "" when it matches everything, None when it matches nothing."""
    field, op, values = condition.field, condition.op, condition.values
    if op in _RANGE:
        column = "id" if field == "id" else "label_int"  # a label name never falls in a range
        return f"{column} {_RANGE[op]} {int(values[0])}"
    if not values:
        return None if op == "in" else ""
    negate = op == "not_in"
    if field == "id":
        return f"id {'not in' if negate else 'in'} {id_list(values)}"
    if field == "tenant":
        listed = _strings(str(v) for v in values)
        return f"tenant not in {listed}" if negate else f"tenant in {listed}"
    if field == "tags":
        found = f"array_contains_any(tags, {_strings(digest(str(v)) for v in values)})"
        return f"(not {found})" if negate else found
    columns: list[tuple[str, str]] = []
    if field == "task":
        columns.append(("task", _strings(digest(str(v)) for v in values)))
    else:  # label: an int matches int labels, a str matches label names
        ints = [v for v in values if isinstance(v, int)]
        names = [v for v in values if isinstance(v, str)]
        if ints:
            columns.append(("label_int", id_list(ints)))
        if names:
            columns.append(("label_key", _strings(digest(v) for v in names)))
    if negate:
        # A missing task/label (null) counts as "not equal"; a comparison with null would not.
        return "(" + " and ".join(f"({c} is null or {c} not in {lst})" for c, lst in columns) + ")"
    return "(" + " or ".join(f"{c} in {lst}" for c, lst in columns) + ")"


def compile_where(where: Where | None) -> str | None:
    """The expression for ``where`` ("" for no filter), or NOTHING when no entry can match it."""
    if where is None:
        return ""
    clauses: list[str] = []
    for condition in where.conditions:
        clause = _clause(condition)
        if clause is None:
            return NOTHING
        if clause:
            clauses.append(clause)
    return " and ".join(clauses)
