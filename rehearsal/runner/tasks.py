"""Task streams of labelled text: the bundled WordNet stream and a loader for a user's own JSON lines.

A :class:`TaskStream` is an ordered tuple of :class:`Task` s, each with its train and test examples, plus one
label index space shared by all tasks (class-incremental learning with a single head)::

    stream = load_wordnet_stream(max_train_per_class=50)
    for task in stream.tasks:
        y = [stream.label_id(ex.label) for ex in task.train]
"""

from __future__ import annotations

import functools
import gzip
import json
import os
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from rehearsal.errors import NotFoundError, ValidationError
from rehearsal.examples import Example
from rehearsal.row_files import read_rows, row_file_kind, row_name

__all__ = [
    "WORDNET_TASKS",
    "Example",
    "Task",
    "TaskStream",
    "load_jsonl_stream",
    "load_wordnet_stream",
]

WORDNET_TASKS: tuple[str, ...] = ("living", "physical", "abstract", "verbs", "modifiers")
_WORDNET_FILE = "wordnet_stream.jsonl.gz"
_SPLITS = ("train", "test")


@dataclass(frozen=True)
class Task:
    name: str
    train: tuple[Example, ...]
    test: tuple[Example, ...]
    labels: tuple[str, ...]  # sorted classes of this task

    @classmethod
    def from_examples(cls, name: str, train: Iterable[Example], test: Iterable[Example]) -> Task:
        train, test = tuple(train), tuple(test)
        return cls(name, train, test, tuple(sorted({ex.known_label for ex in train + test})))


@dataclass(frozen=True)
class TaskStream:
    tasks: tuple[Task, ...]
    # INVARIANT: every label of every task appears once, in task order and sorted within a task; a label
    # shared by two tasks (domain-incremental streams) keeps the position of its first task.
    labels: tuple[str, ...]

    def __post_init__(self) -> None:
        names = [task.name for task in self.tasks]
        if len(set(names)) != len(names):
            raise ValidationError(f"task names must be unique, got {names}")
        self_labels = _stream_labels(self.tasks)
        if self.labels != self_labels:
            raise ValidationError(f"labels must be {self_labels} for these tasks, got {self.labels}")
        # A dict makes label_id O(1); object.__setattr__ because the dataclass is frozen.
        object.__setattr__(self, "_label_ids", {label: i for i, label in enumerate(self.labels)})

    @classmethod
    def from_tasks(cls, tasks: Iterable[Task]) -> TaskStream:
        tasks = tuple(tasks)
        return cls(tasks, _stream_labels(tasks))

    def label_id(self, label: str | None) -> int:
        """Index of ``label`` in :attr:`labels`, the output index of a shared classification head (an
        example's label, so None, an unlabelled example's, is refused like an unknown one)."""
        ids: dict[str, int] = self.__dict__["_label_ids"]
        if label is None:
            raise ValidationError("an unlabelled example has no label id in this stream")
        if label not in ids:
            raise NotFoundError(f"unknown label {label!r}; this stream has {len(self.labels)} labels")
        return ids[label]

    def task(self, name: str) -> Task:
        for task in self.tasks:
            if task.name == name:
                return task
        raise NotFoundError(f"unknown task {name!r}; tasks are {[t.name for t in self.tasks]}")


def _stream_labels(tasks: tuple[Task, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(label for task in tasks for label in task.labels))


def load_wordnet_stream(
    *,
    max_train_per_class: int | None = None,
    max_test_per_class: int | None = None,
    tasks: Sequence[str] | None = None,
    seed: int = 0,
) -> TaskStream:
    """The bundled 5-task stream of WordNet 3.0 glosses (45 classes; see ``rehearsal/data/README.md``).

    ``tasks`` selects and orders tasks (default :data:`WORDNET_TASKS`). The caps subsample each class
    deterministically from ``seed``; a class's draw does not depend on which other tasks are loaded, and a
    smaller cap takes a prefix of a larger cap's draw, so caps are nested.
    """
    return load_bundled_stream(
        _WORDNET_FILE,
        WORDNET_TASKS,
        tasks=tasks,
        caps=(max_train_per_class, max_test_per_class),
        seed=seed,
        # A WordNet class belongs to one task, so the class alone names its draw.
        salt=lambda task, split, label: f"{split}:{label}",
    )


def load_bundled_stream(
    file: str,
    known_tasks: Sequence[str],
    *,
    tasks: Sequence[str] | None,
    caps: tuple[int | None, int | None],
    seed: int,
    salt: Callable[[str, str, str], str],
) -> TaskStream:
    """A stream from a file under ``rehearsal/data`` (JSON lines: text, label, task, split), with each
    (task, split, label) group capped at ``caps`` (train, test) by a draw seeded from ``seed`` and
    ``salt(task, split, label)``; ``tasks`` selects and orders them (default ``known_tasks``)."""
    names = tuple(known_tasks if tasks is None else tasks)
    unknown = [name for name in names if name not in known_tasks]
    if unknown or not names or len(set(names)) != len(names):
        raise ValidationError(f"tasks must be distinct names from {tuple(known_tasks)}, got {list(names)}")
    limit = {
        "train": _check_cap("max_train_per_class", caps[0]),
        "test": _check_cap("max_test_per_class", caps[1]),
    }
    groups: dict[tuple[str, str, str], list[Example]] = {}
    for split, example in _bundled_examples(file):
        if example.task in names:
            groups.setdefault((example.task, split, example.known_label), []).append(example)
    for (task, split, label), examples in groups.items():
        examples[:] = _subsample(examples, limit[split], seed=seed, salt=salt(task, split, label))

    def split_of(task: str, split: str) -> Iterator[Example]:
        for (t, s, _), examples in sorted(groups.items()):
            if (t, s) == (task, split):
                yield from examples

    return TaskStream.from_tasks(
        Task.from_examples(name, split_of(name, "train"), split_of(name, "test")) for name in names
    )


@functools.cache
def _bundled_examples(file: str) -> tuple[tuple[str, Example], ...]:
    """(split, example) for every line of a bundled file, parsed once per process."""
    source = resources.files("rehearsal").joinpath("data", file)
    with source.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as lines:
        records = [
            _parse_line(line, n, ("text", "label", "task", "split"), label_field="label")
            for n, line in enumerate(lines, 1)
        ]
    return tuple((rec["split"], Example(rec["text"], rec["label"], rec["task"])) for rec in records)


def _check_cap(name: str, cap: int | None) -> int | None:
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
        raise ValidationError(f"{name!r} must be a positive int or None, got {cap!r}")
    return cap


def _subsample(examples: list[Example], cap: int | None, *, seed: int, salt: str) -> list[Example]:
    if cap is None or len(examples) <= cap:
        return examples
    # Seeding per (seed, split, class) keeps each class's draw independent of which tasks were selected.
    rng = np.random.default_rng([seed, zlib.crc32(salt.encode("utf-8"))])
    keep = np.sort(rng.permutation(len(examples))[:cap])
    return [examples[i] for i in keep]


def load_jsonl_stream(
    path: str | os.PathLike[str],
    *,
    text_field: str = "text",
    label_field: str = "label",
    task_field: str = "task",
    split_field: str = "split",
    test_fraction: float = 0.2,
    seed: int = 0,
) -> TaskStream:
    """A task stream from a JSON-lines file (one example per line) or a CSV file with a header row (one
    example per row); a ``.gz`` suffix is decompressed.

    Tasks come in order of first appearance. A row's ``split`` must be ``"train"`` or ``"test"``; rows
    without one (or with an empty one) are split per (task, label) group, ``test_fraction`` of each group
    (at least one example of a group of two or more) going to test, chosen with
    ``numpy.random.default_rng(seed)``. Labels may be strings or ints (kept as strings). Blank JSON lines
    are skipped; any other bad row raises :class:`ValidationError` naming the file and the row.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValidationError(f"'test_fraction' must be in (0, 1), got {test_fraction}")
    file = Path(path)
    if not file.is_file():
        raise NotFoundError(f"no such file: {str(file)!r}")
    fields = (text_field, label_field, task_field)
    # One bucket per task (first-appearance order) holding the fixed splits and the unsplit groups by label.
    buckets: dict[str, tuple[list[Example], list[Example], dict[str, list[Example]]]] = {}
    kind = row_file_kind(file)
    for n, row in read_rows(file, kind):
        where = row_name(file, kind, n)
        rec = _check_fields(row, where, fields, label_field=label_field)
        example = Example(rec[text_field], rec[label_field], rec[task_field])
        train, test, unsplit = buckets.setdefault(example.task, ([], [], {}))
        split = rec.get(split_field) or None  # an empty CSV cell is "no split"
        if split is None:
            unsplit.setdefault(example.known_label, []).append(example)
        elif split in _SPLITS:
            (train if split == "train" else test).append(example)
        else:
            raise ValidationError(f"{where}: {split_field!r} must be 'train' or 'test', got {split!r}")
    if not buckets:
        raise ValidationError(f"{str(file)!r} holds no examples")

    rng = np.random.default_rng(seed)
    tasks = []
    for name, (train, test, unsplit) in buckets.items():
        for label in sorted(unsplit):
            group = unsplit[label]
            n_test = max(1, round(test_fraction * len(group))) if len(group) >= 2 else 0
            is_test = np.zeros(len(group), dtype=bool)
            is_test[rng.permutation(len(group))[:n_test]] = True
            train += [ex for ex, t in zip(group, is_test, strict=True) if not t]
            test += [ex for ex, t in zip(group, is_test, strict=True) if t]
        if not train or not test:
            raise ValidationError(
                f"task {name!r} needs train and test examples, has {len(train)} train and {len(test)} test"
            )
        tasks.append(Task.from_examples(name, train, test))
    return TaskStream.from_tasks(tasks)


def _parse_line(line: str, n: int, fields: Sequence[str], *, label_field: str) -> dict[str, Any]:
    """Decode one JSON line of a bundled file and check its fields."""
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValidationError(f"line {n}: not valid JSON ({exc.msg})") from None
    if not isinstance(rec, dict):
        raise ValidationError(f"line {n}: expected a JSON object, got {type(rec).__name__}")
    return _check_fields(rec, f"line {n}", fields, label_field=label_field)


def _check_fields(
    rec: dict[str, Any], where: str, fields: Sequence[str], *, label_field: str
) -> dict[str, Any]:
    """Check ``fields`` hold non-empty strings (an int label becomes a string); ``where`` names the row."""
    for field in fields:
        if field not in rec:
            raise ValidationError(f"{where}: missing field {field!r}")
        value = rec[field]
        if field == label_field and isinstance(value, int) and not isinstance(value, bool):
            rec[field] = value = str(value)
        if not isinstance(value, str) or not value.strip():
            raise ValidationError(f"{where}: field {field!r} must be a non-empty string, got {value!r}")
    return rec
