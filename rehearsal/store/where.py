"""Metadata filters (``where=``) compiled to SQL over the catalog's ``entries`` table.

A filter is a mapping from a field to a condition::

    {"task": "billing"}                       equality
    {"label": {"$in": [1, 2]}}                any of
    {"task": {"$ne": "billing"}}              not equal   ({"$nin": [...]} : none of)
    {"tags": "safety"}                        tags contain "safety" ($in: any of, $ne / $nin: none of)
    {"id": {"$lt": 1000}}                     id comparisons ($lt, $lte, $gt, $gte), e.g. "before this run"

Conditions on several fields are combined with AND. Unknown fields or operators raise ValidationError,
so a typo never silently matches everything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rehearsal.errors import ValidationError

__all__ = ["FILTER_FIELDS", "compile_where"]

FILTER_FIELDS = ("task", "label", "tenant", "tags", "id")
_SET_OPS = ("$eq", "$ne", "$in", "$nin")
_RANGE_OPS = {"$lt": "<", "$lte": "<=", "$gt": ">", "$gte": ">="}


def compile_where(where: Mapping[str, Any] | None) -> tuple[str, list[Any]]:
    """Return an SQL boolean expression over ``entries`` and its parameters (``"1"`` for no filter)."""
    if where is None:
        return "1", []
    if not isinstance(where, Mapping):
        raise ValidationError(f"'where' must be a mapping, got {type(where).__name__}")
    clauses: list[str] = []
    params: list[Any] = []
    for field, condition in where.items():
        if field not in FILTER_FIELDS:
            raise ValidationError(
                f"unknown filter field {field!r}; filterable fields are {list(FILTER_FIELDS)}"
            )
        for op, operand in _normalise(field, condition):
            clause, args = _clause(field, op, operand)
            clauses.append(clause)
            params.extend(args)
    return (" AND ".join(clauses) if clauses else "1"), params


def _normalise(field: str, condition: Any) -> list[tuple[str, Any]]:
    if not isinstance(condition, Mapping):
        return [("$eq", condition)]
    if not condition:
        raise ValidationError(f"empty condition for filter field {field!r}")
    known = _SET_OPS + (tuple(_RANGE_OPS) if field == "id" else ())
    for op in condition:
        if op not in known:
            raise ValidationError(
                f"unknown operator {op!r} for filter field {field!r}; use one of {list(known)}"
            )
    return list(condition.items())


def _scalar(field: str, value: Any) -> Any:
    allowed: tuple[type, ...] = (int,) if field == "id" else (str, int)
    if isinstance(value, bool) or not isinstance(value, allowed):
        raise ValidationError(
            f"filter value for {field!r} must be {'int' if field == 'id' else 'str or int'}, got {value!r}"
        )
    return value


def _values(field: str, op: str, operand: Any) -> list[Any]:
    if isinstance(operand, (str, bytes)) or not isinstance(operand, Sequence):
        raise ValidationError(f"{op} for filter field {field!r} needs a list, got {operand!r}")
    return [_scalar(field, v) for v in operand]


def _clause(field: str, op: str, operand: Any) -> tuple[str, list[Any]]:
    if op in _RANGE_OPS:
        return f"id {_RANGE_OPS[op]} ?", [_scalar(field, operand)]
    if op in ("$eq", "$ne"):
        values = [_scalar(field, operand)]
    else:
        values = _values(field, op, operand)
        if not values:
            # "any of nothing" matches nothing; "none of nothing" matches everything.
            return ("0" if op == "$in" else "1"), []
    marks = ",".join("?" * len(values))
    negate = op in ("$ne", "$nin")
    if field == "tags":
        exists = f"EXISTS (SELECT 1 FROM json_each(entries.tags) WHERE json_each.value IN ({marks}))"
        return (f"NOT {exists}" if negate else exists), values
    column = "id" if field == "id" else field
    if negate:
        # NULL-safe: an entry with no task/label counts as "not equal".
        return f"({column} IS NULL OR {column} NOT IN ({marks}))", values
    return f"{column} IN ({marks})", values
