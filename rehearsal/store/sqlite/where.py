"""The where-filter tree compiled to SQL over the record store's ``entries`` table (values as parameters)."""

from __future__ import annotations

from typing import Any

from rehearsal.store.where import SQL_RANGE, Condition, Where, compile_sql_and

__all__ = ["compile_where"]


def compile_where(where: Where | None) -> tuple[str, list[Any]]:
    """An SQL boolean expression over ``entries`` and its parameters (``"1"`` for no filter)."""
    return compile_sql_and(where, _clause, match_all="1")


def _clause(condition: Condition) -> tuple[str, list[Any]]:
    field, op, values = condition.field, condition.op, list(condition.values)
    if op in SQL_RANGE:
        # A label may be an int or a class name: a range compares ints only (SQLite orders every
        # integer before every text, so without the type test "label > 3" would match every name).
        typed = "" if field == "id" else f"typeof({field}) = 'integer' AND "
        return f"({typed}{field} {SQL_RANGE[op]} ?)", values
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
