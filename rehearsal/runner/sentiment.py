"""The bundled domain-incremental stream: sentence sentiment in four domains that share three labels.

Every task has the labels ``negative``, ``neutral`` and ``positive``; what changes from task to task is the
text's domain (tweets -> movie reviews -> product reviews -> newspaper editorials), so one head keeps its
classes and forgetting comes from the shift in inputs, not from new classes. Source, cleaning and licence:
``rehearsal/data/README.md``::

    stream = load_sentiment_stream(max_train_per_class=100)
    assert all(task.labels == SENTIMENT_LABELS for task in stream.tasks)
"""

from __future__ import annotations

import functools
import gzip
from collections.abc import Iterator, Sequence
from importlib import resources

from rehearsal.errors import ValidationError
from rehearsal.runner.tasks import Example, Task, TaskStream, _check_cap, _parse_line, _subsample

__all__ = ["SENTIMENT_LABELS", "SENTIMENT_TASKS", "load_sentiment_stream"]

SENTIMENT_TASKS: tuple[str, ...] = ("tweets", "movies", "products", "editorials")
SENTIMENT_LABELS: tuple[str, ...] = ("negative", "neutral", "positive")
_FILE = "sentiment_stream.jsonl.gz"


def load_sentiment_stream(
    *,
    max_train_per_class: int | None = None,
    max_test_per_class: int | None = None,
    tasks: Sequence[str] | None = None,
    seed: int = 0,
) -> TaskStream:
    """The bundled 4-task sentiment stream (400 train / 100 test per task and label at most).

    ``tasks`` selects and orders tasks (default :data:`SENTIMENT_TASKS`). A cap counts per task and label
    and subsamples deterministically from ``seed``, as ``load_wordnet_stream`` does: a draw does not depend
    on which other tasks are loaded, and a smaller cap takes a prefix of a larger one.
    """
    names = tuple(SENTIMENT_TASKS if tasks is None else tasks)
    unknown = [name for name in names if name not in SENTIMENT_TASKS]
    if unknown or not names or len(set(names)) != len(names):
        raise ValidationError(f"tasks must be distinct names from {SENTIMENT_TASKS}, got {list(names)}")
    caps = {
        "train": _check_cap("max_train_per_class", max_train_per_class),
        "test": _check_cap("max_test_per_class", max_test_per_class),
    }
    groups: dict[tuple[str, str, str], list[Example]] = {}
    for split, example in _examples():
        if example.task in names:
            groups.setdefault((example.task, split, example.label), []).append(example)
    for (task, split, label), examples in groups.items():
        # The task is part of the salt: the same label in two domains is two independent draws.
        examples[:] = _subsample(examples, caps[split], seed=seed, salt=f"{task}:{split}:{label}")

    def split_of(task: str, split: str) -> Iterator[Example]:
        for (t, s, _), examples in sorted(groups.items()):
            if (t, s) == (task, split):
                yield from examples

    return TaskStream.from_tasks(
        Task.from_examples(name, split_of(name, "train"), split_of(name, "test")) for name in names
    )


@functools.cache
def _examples() -> tuple[tuple[str, Example], ...]:
    """(split, example) for every line of the bundled file, parsed once per process."""
    source = resources.files("rehearsal").joinpath("data", _FILE)
    with source.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as lines:
        records = [
            _parse_line(line, n, ("text", "label", "task", "split"), label_field="label")
            for n, line in enumerate(lines, 1)
        ]
    return tuple((rec["split"], Example(rec["text"], rec["label"], rec["task"])) for rec in records)
