"""Routing inputs to per-task adapters, the two ways: :class:`AdapterRouter`, a k-NN vote over the memory's
``task`` metadata, and :class:`TaskGate`, a small task classifier fine-tuned on the memory's contents.

The k-NN vote of :class:`AdapterRouter` needs no training, but it can only be
as good as the memory's vectors: MiniLM embeds what a text *means*, and tasks split by part of speech or by
register sit next to each other in that space (0.78 per input on the WordNet tasks). :class:`TaskGate`
fine-tunes the encoder itself, with one output per task, on the texts the memory holds and their
``task`` metadata — the memory is still the gate's only source — and routes by its softmax, with the
same confidence threshold and fallback as the vote::

    gate = TaskGate.from_memory(memory)            # reads texts + task labels, fine-tunes MiniLM
    gate.route(["move fast", "a large feline"], threshold=0.6, fallback="merged")
    gate.save("run/gate"); TaskGate.load("run/gate")
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rehearsal._files import write_json
from rehearsal.embedding import default_model_path
from rehearsal.errors import ConfigError, StoreFormatError, ValidationError
from rehearsal.methods.inference import batch_logits

if TYPE_CHECKING:
    from rehearsal.memory.facade import RehearsalMemory

__all__ = ["AdapterRouter", "TaskGate", "group_by_route"]

_MANIFEST = "gate.json"
_FORMAT = "rehearsal-task-gate/1"


class TaskGate:
    """A sequence classifier over task names (see the module docstring); build it with :meth:`train`,
    :meth:`from_memory` or :meth:`load`."""

    def __init__(self, model: Any, tokenizer: Any, tasks: Sequence[str], *, max_length: int = 64) -> None:
        if len(tasks) != getattr(model.config, "num_labels", None):
            raise ValidationError(
                f"the gate model has {model.config.num_labels} outputs for {len(tasks)} tasks"
            )
        self.model, self.tokenizer = model, tokenizer
        self.tasks = [str(t) for t in tasks]
        self.max_length = max_length

    def __repr__(self) -> str:
        return f"TaskGate(tasks={self.tasks})"

    # -- building ---------------------------------------------------------------------------------
    @classmethod
    def train(
        cls,
        texts: Sequence[str],
        tasks: Sequence[str],
        *,
        base_model: str | os.PathLike[str] | None = None,
        epochs: float = 2.0,
        learning_rate: float = 1e-4,
        batch_size: int = 32,
        max_length: int = 64,
        seed: int = 0,
    ) -> TaskGate:
        """Fine-tune ``base_model`` (default: the packaged MiniLM) to tell ``tasks`` apart from ``texts``."""
        from datasets import Dataset
        from transformers import (
            AutoModelForSequenceClassification,
            AutoTokenizer,
            DataCollatorWithPadding,
            Trainer,
            TrainingArguments,
            set_seed,
        )

        if len(texts) != len(tasks):
            raise ValidationError(f"got {len(texts)} texts but {len(tasks)} task labels")
        names = sorted({str(t) for t in tasks})
        if len(names) < 2:
            raise ValidationError(f"a gate needs texts of at least 2 tasks, got {names}")
        source = str(base_model or default_model_path())
        tokenizer = AutoTokenizer.from_pretrained(source)
        set_seed(seed)
        # The gate's head is new: a base model saved with another head size is fine.
        model = AutoModelForSequenceClassification.from_pretrained(
            source, num_labels=len(names), ignore_mismatched_sizes=True
        )
        encoded = tokenizer(list(texts), truncation=True, max_length=max_length)
        columns: dict[str, list[Any]] = {k: list(v) for k, v in encoded.items()}
        columns["labels"] = [names.index(str(t)) for t in tasks]
        with tempfile.TemporaryDirectory(prefix="rehearsal-gate-") as scratch:
            args = TrainingArguments(
                output_dir=scratch,
                per_device_train_batch_size=batch_size,
                num_train_epochs=epochs,
                learning_rate=learning_rate,
                seed=seed,
                save_strategy="no",
                logging_strategy="no",
                report_to=[],
                disable_tqdm=True,
            )
            trainer = Trainer(
                model=model,
                args=args,
                train_dataset=Dataset.from_dict(columns),
                data_collator=DataCollatorWithPadding(tokenizer),
            )
            trainer.train()
        model.eval()
        return cls(model, tokenizer, names, max_length=max_length)

    @classmethod
    def from_memory(cls, memory: RehearsalMemory, *, where: Any = None, **train_options: Any) -> TaskGate:
        """Train on every entry of ``memory`` (matching ``where``) that has a ``task``: its text and task."""
        if memory.embedding_only:
            raise ConfigError("a trained gate reads the memory's texts; an embedding-only memory has none")
        ids = memory.ids(where)
        rows = memory.entries(ids)
        labelled = [i for i in ids if rows[i].task is not None]
        tasks = [str(rows[i].task) for i in labelled]
        return cls.train(memory.get_texts(labelled), tasks, **train_options)

    # -- routing ----------------------------------------------------------------------------------
    def probabilities(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        """(n, tasks) softmax of the gate over ``self.tasks`` for each text."""
        import torch

        if not len(texts):
            return np.zeros((0, len(self.tasks)), dtype=np.float32)
        logits = batch_logits(
            self.model, self.tokenizer, texts, batch_size=batch_size, max_length=self.max_length
        )
        return np.asarray(torch.softmax(logits, dim=-1).numpy(), dtype=np.float32)

    def vote(self, texts: Sequence[str]) -> list[tuple[str, float]]:
        """For each text: the most probable task and its probability."""
        probs = self.probabilities(texts)
        best = probs.argmax(axis=1)
        return [(self.tasks[int(j)], float(probs[i, j])) for i, j in enumerate(best)]

    def route(self, texts: Sequence[str], *, threshold: float = 0.0, fallback: str = "merged") -> list[str]:
        """The task of each text, or ``fallback`` where the gate's probability is under ``threshold``."""
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
            raise ConfigError(f"'threshold' must be in [0, 1], got {threshold!r}")
        return [task if p >= threshold else fallback for task, p in self.vote(texts)]

    def route_accuracy(
        self, texts: Sequence[str], true_tasks: Sequence[str], *, threshold: float = 0.0
    ) -> float:
        """Share of texts routed to their own task (a fallback counts as a miss)."""
        if len(texts) != len(true_tasks) or not len(texts):
            raise ValidationError(
                f"need as many true tasks as texts (>= 1), got {len(texts)} and {len(true_tasks)}"
            )
        routes = self.route(texts, threshold=threshold, fallback="\x00")
        return sum(r == t for r, t in zip(routes, true_tasks, strict=True)) / len(routes)

    # -- persistence ------------------------------------------------------------------------------
    def save(self, folder: str | os.PathLike[str]) -> None:
        """Write the model, its tokenizer and ``gate.json`` (task names, max length) into ``folder``."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(out)
        self.tokenizer.save_pretrained(out)
        manifest = {"format": _FORMAT, "tasks": self.tasks, "max_length": self.max_length}
        write_json(out / _MANIFEST, manifest)

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> TaskGate:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        src = Path(folder)
        try:
            manifest = json.loads((src / _MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise StoreFormatError(f"{str(src)!r} holds no readable {_MANIFEST}: {exc}") from exc
        if manifest.get("format") != _FORMAT or not isinstance(manifest.get("tasks"), list):
            raise StoreFormatError(f"{str(src / _MANIFEST)!r} is not a task gate ({_FORMAT!r})")
        model = AutoModelForSequenceClassification.from_pretrained(src)
        return cls(
            model, AutoTokenizer.from_pretrained(src), manifest["tasks"], max_length=manifest["max_length"]
        )


class AdapterRouter:
    """Routes inputs to task adapters by a similarity-weighted k-NN vote over a memory's ``task`` metadata.

    Each of an input's ``k`` nearest memories votes for its task with weight ``max(similarity, 0)``; the
    task with the largest share wins if that share is at least ``threshold``, otherwise (and when no
    memory with a task is found, or the winner is not in ``tasks``) the input goes to ``fallback``.
    """

    def __init__(
        self,
        memory: RehearsalMemory,
        *,
        k: int = 16,
        threshold: float = 0.6,
        fallback: str = "merged",
        tasks: Collection[str] | None = None,
        groups: Mapping[str, str] | None = None,
    ) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"'k' must be an int >= 1, got {k!r}")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
            raise ConfigError(f"'threshold' must be in [0, 1], got {threshold!r}")
        if not isinstance(fallback, str) or not fallback:
            raise ConfigError(f"'fallback' must be a non-empty adapter name, got {fallback!r}")
        self.memory = memory
        self.k = k
        self.threshold = float(threshold)
        self.fallback = fallback
        self.tasks = None if tasks is None else frozenset(tasks)
        self.groups = {} if groups is None else {str(t): str(g) for t, g in groups.items()}

    def _ballots(self, vectors: np.ndarray) -> list[dict[str, float]]:
        ballots = []
        for hits in self.memory.search_vectors(vectors, self.k):
            ballot: dict[str, float] = {}
            for hit in hits:
                task = hit.metadata.get("task")
                if task is not None:
                    name = self.groups.get(str(task), str(task))
                    ballot[name] = ballot.get(name, 0.0) + max(hit.score, 0.0)
            ballots.append(ballot)
        return ballots

    @staticmethod
    def _winner(ballot: dict[str, float]) -> tuple[str | None, float]:
        total = sum(ballot.values())
        if total <= 0.0:
            return None, 0.0
        # Ties break by name so a route never depends on dict order.
        best = min(ballot, key=lambda t: (-ballot[t], t))
        return best, ballot[best] / total

    def _decide(self, task: str | None, share: float) -> str:
        confident = task is not None and share >= self.threshold
        allowed = self.tasks is None or task in self.tasks
        return task if confident and allowed and task is not None else self.fallback

    def vote(self, vectors: np.ndarray) -> list[tuple[str | None, float]]:
        """For each row of ``vectors`` (n, dim): the winning task and its share of the vote in [0, 1]
        (``(None, 0.0)`` when no neighbour carries a task)."""
        return [self._winner(ballot) for ballot in self._ballots(vectors)]

    def route_pooled(self, vectors: np.ndarray) -> str:
        """One adapter for rows known to share a task (a session, a document, an evaluation batch): the
        rows' ballots are added up before the vote, so single ambiguous rows are outvoted."""
        pooled: dict[str, float] = {}
        for ballot in self._ballots(vectors):
            for task, weight in ballot.items():
                pooled[task] = pooled.get(task, 0.0) + weight
        return self._decide(*self._winner(pooled))

    def route(self, vectors: np.ndarray) -> list[str]:
        """The adapter name for each row of ``vectors`` (n, dim): a task, or ``fallback``."""
        return [self._decide(task, share) for task, share in self.vote(vectors)]

    def route_accuracy(self, vectors: np.ndarray, true_tasks: Sequence[str]) -> float:
        """Share of inputs routed to their own task's adapter (a fallback counts as a miss)."""
        if len(true_tasks) != len(vectors):
            raise ValidationError(f"got {len(vectors)} vectors but {len(true_tasks)} true tasks")
        if not len(true_tasks):
            raise ValidationError("route_accuracy needs at least one input")
        routes = self.route(vectors)
        return sum(r == t for r, t in zip(routes, true_tasks, strict=True)) / len(routes)


def group_by_route(routes: Sequence[str]) -> dict[str, list[int]]:
    """Row indices per adapter, so each adapter runs once over its rows: ``{"verbs": [0, 3], ...}``."""
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(routes):
        groups.setdefault(name, []).append(i)
    return groups
