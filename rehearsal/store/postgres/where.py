"""The where-filter tree compiled to a PostgreSQL condition over ``entries``; every value is a parameter.

Matches what the SQLite backend selects: task, tenant and tags compare as text; a label value compares
with ``label_int`` when it is an int and with ``label_text`` when it is a name, and ranges see int labels
only; "not equal" holds for an entry with no task or label; ``$in`` of nothing matches nothing.
"""

from __future__ import annotations

from typing import Any

from rehearsal.store.where import SQL_RANGE, Condition, Where, compile_sql_and

__all__ = ["compile_where"]


def compile_where(where: Where | None) -> tuple[str, list[Any]]:
    """An SQL boolean expression over ``entries`` and its parameters (``"TRUE"`` for no filter)."""
    return compile_sql_and(where, _clause, match_all="TRUE")


def _clause(condition: Condition) -> tuple[str, list[Any]]:
    field, op, values = condition.field, condition.op, list(condition.values)
    if op in SQL_RANGE:
        column = "id" if field == "id" else "label_int"
        return f"({column} {SQL_RANGE[op]} %s)", values
    if not values:
        return ("FALSE" if op == "in" else "TRUE"), []
    if field == "id":
        return ("(id = ANY(%s))" if op == "in" else "(id <> ALL(%s))"), [values]
    # A positive test stays bare, so the planner can use the column's index and estimate how many rows
    # match (then a selective filter is answered exactly from the index, not by the HNSW graph). Negated,
    # COALESCE makes a NULL task or label (or an empty array) "not one of them" rather than unknown.
    if field == "label":
        ints = [v for v in values if isinstance(v, int)]
        names = [v for v in values if isinstance(v, str)]
        if op == "in":
            return "(label_int = ANY(%s) OR label_text = ANY(%s))", [ints, names]
        test = "(COALESCE(label_int = ANY(%s), FALSE) OR COALESCE(label_text = ANY(%s), FALSE))"
        return f"(NOT {test})", [ints, names]
    texts = [str(v) for v in values]
    if field == "tags":
        test = "(tags && %s::text[])"
        return (test if op == "in" else f"(NOT {test})"), [texts]
    # task or tenant
    if op == "in":
        return f"({field} = ANY(%s::text[]))", [texts]
    return f"(NOT COALESCE({field} = ANY(%s::text[]), FALSE))", [texts]
