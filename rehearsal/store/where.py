"""Metadata filters (``where=``) as a backend-neutral tree; each backend compiles the tree to its queries.

A filter is written as a mapping from a field to a condition::

    {"task": "billing"}                       equality
    {"label": {"$in": [1, 2]}}                any of
    {"task": {"$ne": "billing"}}              not equal   ({"$nin": [...]} : none of)
    {"tags": "safety"}                        tags contain "safety" ($in: any of, $ne / $nin: none of)
    {"id": {"$lt": 1000}}                     id comparisons ($lt, $lte, $gt, $gte), e.g. "before this run"
    {"label": {"$gte": 10, "$lt": 20}}        int label ranges (entries whose label is a name never match)

:func:`parse_where` checks it and returns a :class:`Where`: conditions combined with AND, each a field, an
operator and its values. Unknown fields or operators raise ValidationError, so a typo never silently
matches everything. ``$in`` of nothing matches nothing; ``$nin`` of nothing matches everything; an entry
with no task or label counts as "not equal" to any value.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rehearsal.errors import ValidationError

__all__ = [
    "FILTER_FIELDS",
    "OPERATORS",
    "RANGE_OPERATORS",
    "SQL_RANGE",
    "Condition",
    "Where",
    "compile_sql_and",
    "parse_where",
]

FILTER_FIELDS = ("task", "label", "tenant", "tags", "id")
# "in": the field (for tags: any tag) is one of the values; "not_in": it is none of them.
OPERATORS = ("in", "not_in", "lt", "lte", "gt", "gte")
RANGE_OPERATORS = ("lt", "lte", "gt", "gte")  # on "id" and int labels, with exactly one int value
SQL_RANGE = {"lt": "<", "lte": "<=", "gt": ">", "gte": ">="}  # the range operators as SQL spells them
_RANGE_FIELDS = ("id", "label")
_SET_OPS = {"$eq": "in", "$ne": "not_in", "$in": "in", "$nin": "not_in"}
_RANGE_OPS = {"$lt": "lt", "$lte": "lte", "$gt": "gt", "$gte": "gte"}


@dataclass(frozen=True)
class Condition:
    field: str
    op: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Where:
    """Conditions that must all hold (an empty tuple matches every entry)."""

    conditions: tuple[Condition, ...] = ()


def compile_sql_and(
    where: Where | None, clause: Callable[[Condition], tuple[str, list[Any]]], *, match_all: str
) -> tuple[str, list[Any]]:
    """One SQL expression for ``where``: each condition's ``clause`` joined by AND, parameters in order.

    ``match_all`` is the backend's literal for "no filter" (the SQL dialects spell true differently).
    """
    if where is None or not where.conditions:
        return match_all, []
    clauses: list[str] = []
    params: list[Any] = []
    for condition in where.conditions:
        text, args = clause(condition)
        clauses.append(text)
        params.extend(args)
    return " AND ".join(clauses), params


def parse_where(where: Mapping[str, Any] | Where | None) -> Where | None:
    """The tree of a ``where=`` mapping (None: no filter); a tree passes through unchanged."""
    if where is None or isinstance(where, Where):
        return where
    if not isinstance(where, Mapping):
        raise ValidationError(f"'where' must be a mapping, got {type(where).__name__}")
    conditions: list[Condition] = []
    for field, condition in where.items():
        if field not in FILTER_FIELDS:
            raise ValidationError(
                f"unknown filter field {field!r}; filterable fields are {list(FILTER_FIELDS)}"
            )
        for op, operand in _normalise(field, condition):
            conditions.append(_condition(field, op, operand))
    return Where(tuple(conditions))


def _normalise(field: str, condition: Any) -> list[tuple[str, Any]]:
    if not isinstance(condition, Mapping):
        return [("$eq", condition)]
    if not condition:
        raise ValidationError(f"empty condition for filter field {field!r}")
    known = tuple(_SET_OPS) + (tuple(_RANGE_OPS) if field in _RANGE_FIELDS else ())
    for op in condition:
        if op not in known:
            raise ValidationError(
                f"unknown operator {op!r} for filter field {field!r}; use one of {list(known)}"
            )
    return list(condition.items())


def _scalar(field: str, value: Any, *, ints_only: bool = False) -> Any:
    allowed: tuple[type, ...] = (int,) if field == "id" or ints_only else (str, int)
    if isinstance(value, bool) or not isinstance(value, allowed):
        kind = "int" if len(allowed) == 1 else "str or int"
        raise ValidationError(f"filter value for {field!r} must be {kind}, got {value!r}")
    if isinstance(value, int) and not -(1 << 63) <= value < (1 << 63):
        # Nothing stored can match it (SQLite keeps int64), and binding it would raise OverflowError.
        raise ValidationError(f"filter value for {field!r} must fit in a signed 64-bit integer, got {value}")
    return value


def _values(field: str, op: str, operand: Any) -> tuple[Any, ...]:
    if isinstance(operand, (str, bytes)) or not isinstance(operand, Sequence):
        raise ValidationError(f"{op} for filter field {field!r} needs a list, got {operand!r}")
    return tuple(_scalar(field, v) for v in operand)


def _condition(field: str, op: str, operand: Any) -> Condition:
    if op in _RANGE_OPS:
        return Condition(field, _RANGE_OPS[op], (_scalar(field, operand, ints_only=True),))
    if op in ("$eq", "$ne"):
        return Condition(field, _SET_OPS[op], (_scalar(field, operand),))
    return Condition(field, _SET_OPS[op], _values(field, op, operand))
