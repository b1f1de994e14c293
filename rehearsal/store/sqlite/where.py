"""The where-filter tree compiled to SQL over the record store's ``entries`` table (values as parameters)."""

from __future__ import annotations

from typing import Any

from rehearsal.store.where import Condition, Where

__all__ = ["compile_where"]

_RANGE_SQL = {"lt": "<", "lte": "<=", "gt": ">", "gte": ">="}


def compile_where(where: Where | None) -> tuple[str, list[Any]]:
    """An SQL boolean expression over ``entries`` and its parameters (``"1"`` for no filter)."""
    if where is None or not where.conditions:
        return "1", []
    clauses: list[str] = []
    params: list[Any] = []
    for condition in where.conditions:
        clause, args = _clause(condition)
        clauses.append(clause)
        params.extend(args)
    return " AND ".join(clauses), params


def _clause(condition: Condition) -> tuple[str, list[Any]]:
    field, op, values = condition.field, condition.op, list(condition.values)
    if op in _RANGE_SQL:
        # A label may be an int or a class name: a range compares ints only (SQLite orders every
        # integer before every text, so without the type test "label > 3" would match every name).
        typed = "" if field == "id" else f"typeof({field}) = 'integer' AND "
        return f"({typed}{field} {_RANGE_SQL[op]} ?)", values
    if not values:
        # "any of nothing" matches nothing; "none of nothing" matches everything.
        return ("0" if op == "in" else "1"), []
    marks = ",".join("?" * len(values))
    negate = op == "not_in"
    if field == "tags":
        exists = f"EXISTS (SELECT 1 FROM json_each(entries.tags) WHERE json_each.value IN ({marks}))"
        return (f"NOT {exists}" if negate else exists), values
    if negate:
        # NULL-safe: an entry with no task/label counts as "not equal".
        return f"({field} IS NULL OR {field} NOT IN ({marks}))", values
    return f"{field} IN ({marks})", values
