"""The bundled domain-incremental stream: sentence sentiment in four domains that share three labels.

Every task has the labels ``negative``, ``neutral`` and ``positive``; what changes from task to task is the
text's domain (tweets -> movie reviews -> product reviews -> newspaper editorials), so one head keeps its
classes and forgetting comes from the shift in inputs, not from new classes. Source, cleaning and licence:
``rehearsal/data/README.md``::

    stream = load_sentiment_stream(max_train_per_class=100)
    assert all(task.labels == SENTIMENT_LABELS for task in stream.tasks)
"""

from __future__ import annotations

from collections.abc import Sequence

from rehearsal.runner.tasks import TaskStream, load_bundled_stream

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
    return load_bundled_stream(
        _FILE,
        SENTIMENT_TASKS,
        tasks=tasks,
        caps=(max_train_per_class, max_test_per_class),
        seed=seed,
        # The task is part of the salt: the same label in two domains is two independent draws.
        salt=lambda task, split, label: f"{task}:{split}:{label}",
    )
