"""The labelled examples an update brings (a JSON-lines file), their held-out split, and the suite.

One example per line: ``{"text": ..., "label": ..., "task": ..., "tags": [...]}``; ``label`` is a
string or an int (kept as its string), ``task`` defaults to the update's ``task`` argument, ``tags``
(governance tags such as ``safety``) to none. A ``.csv`` file (with a header row) holds the same columns,
``tags`` as one comma-separated cell, as ``rehearsal ingest`` reads them; an empty cell is an absent
field. Requests for ``rehearsal shadow`` use the same formats with ``label`` optional.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rehearsal.errors import ValidationError
from rehearsal.examples import Example
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.row_files import read_rows, row_file_kind, row_name

__all__ = ["data_digest", "read_examples", "split_heldout", "suite_examples", "to_memory"]


def read_examples(
    path: str | os.PathLike[str], *, task: str = "default", labelled: bool = True
) -> list[Example]:
    """The examples of a JSON-lines or CSV file (``.gz`` too); ``labelled`` requires a label on each."""
    file = Path(path)
    if not file.is_file():
        raise ValidationError(f"cannot read {str(file)!r}: no such file")
    kind = row_file_kind(file)
    out: list[Example] = []
    for number, raw in read_rows(file, kind):
        where = row_name(file, kind, number)
        row = _from_csv(raw, where) if kind == "csv" else raw
        text = row.get("text")
        if not isinstance(text, str) or not text.strip():
            raise ValidationError(f"{where} needs a non-empty string 'text'")
        label = row.get("label")
        if label is None and labelled:
            raise ValidationError(f"{where} has no 'label' (an update learns from labelled examples)")
        if label is not None and (isinstance(label, bool) or not isinstance(label, str | int)):
            raise ValidationError(f"{where}: 'label' must be a string or an int, got {label!r}")
        name = row.get("task", task)
        tags = row.get("tags", [])
        if not isinstance(name, str) or not name:
            raise ValidationError(f"{where}: 'task' must be a non-empty string, got {name!r}")
        if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
            raise ValidationError(f"{where}: 'tags' must be a list of strings, got {tags!r}")
        out.append(Example(text, None if label is None else str(label), name, tags=tuple(tags)))
    if not out:
        raise ValidationError(f"{str(file)!r} holds no examples")
    return out


def _from_csv(row: dict[str, object], where: str) -> dict[str, object]:
    """A CSV row as the dict a JSON line would give: empty cells dropped, ``tags`` split on commas."""
    if "text" not in row:
        raise ValidationError(f"{where}: the CSV header needs a 'text' column, got {sorted(row)}")
    found: dict[str, object] = {k: v for k, v in row.items() if isinstance(v, str) and v.strip()}
    if isinstance(found.get("tags"), str):
        found["tags"] = [t.strip() for t in str(found["tags"]).split(",") if t.strip()]
    return found


def data_digest(examples: Sequence[Example]) -> str:
    """A short digest of the examples (order-free): the same data names the same update."""
    rows = sorted(json.dumps([e.text, e.label, e.task, list(e.tags)]) for e in examples)
    return hashlib.sha256("\n".join(rows).encode("utf-8")).hexdigest()[:12]


def split_heldout(
    examples: Sequence[Example], share: float, *, rng: np.random.Generator
) -> tuple[list[Example], list[Example]]:
    """(train, held out): ``share`` of each task and label's examples held out, at least one of a group
    of two or more when ``share`` > 0, never the whole group."""
    groups: dict[tuple[str, str | None], list[Example]] = {}
    for ex in examples:
        groups.setdefault((ex.task, ex.label), []).append(ex)
    train: list[Example] = []
    held: list[Example] = []
    for key in sorted(groups, key=lambda k: (k[0], str(k[1]))):
        members = groups[key]
        order = rng.permutation(len(members))
        n_held = (
            0 if share <= 0 or len(members) < 2 else min(len(members) - 1, max(1, int(len(members) * share)))
        )
        held.extend(members[i] for i in order[:n_held])
        train.extend(members[i] for i in order[n_held:])
    return train, held


def to_memory(
    memory: RehearsalMemory, examples: Sequence[Example], vectors: np.ndarray | None = None
) -> list[int]:
    if not examples:
        return []
    texts = [e.text for e in examples]
    return memory.add(texts, metadata=[e.metadata() for e in examples], vectors=vectors)


def suite_examples(suite: RehearsalMemory, tasks: Sequence[str]) -> list[Example]:
    """The suite's examples of ``tasks``, in id order."""
    ids = suite.ids({"task": {"$in": list(tasks)}}) if tasks else []
    if not ids:
        return []
    rows = suite.entries(ids)
    texts = suite.get_texts(ids)
    return [
        Example(
            text, None if rows[i].label is None else str(rows[i].label), str(rows[i].task), tags=rows[i].tags
        )
        for i, text in zip(ids, texts, strict=True)
    ]
