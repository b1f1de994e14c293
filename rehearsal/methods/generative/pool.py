"""``GeneratedPool``: the generated examples of old classes, written once per task and replayed from.

Entries carry the phase after which they were written, so a resumed run drops what an interrupted phase
wrote (``before``). The file is JSON, replaced atomically; it holds generated text only, never a real
example, though a generator can write near copies of what it learnt (see ``memorisation``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from rehearsal._files import write_json
from rehearsal.errors import ConfigError

__all__ = ["Generated", "GeneratedPool"]


@dataclass(frozen=True)
class Generated:
    """One generated example: its text, class id, class name, task and the phase that wrote it."""

    text: str
    label: int
    label_name: str
    task: str
    phase: int


class GeneratedPool:
    """The cache of generated examples, grouped by class."""

    def __init__(self, entries: Iterable[Generated] = ()) -> None:
        self.entries: list[Generated] = list(entries)

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, entries: Iterable[Generated]) -> None:
        self.entries.extend(entries)

    def labels(self) -> list[int]:
        return sorted({e.label for e in self.entries})

    def by_label(self) -> dict[int, list[Generated]]:
        out: dict[int, list[Generated]] = {}
        for entry in self.entries:
            out.setdefault(entry.label, []).append(entry)
        return out

    def before(self, phase: int) -> GeneratedPool:
        """The entries written after phases earlier than ``phase``."""
        return GeneratedPool(e for e in self.entries if e.phase < phase)

    def sample(self, count: int, rng: np.random.Generator) -> list[Generated]:
        """``count`` entries, class-balanced: the classes take turns in a seeded order, each drawing its
        entries without replacement (then again, reshuffled, once a class has given all it has)."""
        groups = self.by_label()
        if count <= 0 or not groups:
            return []
        labels = sorted(groups)
        turn = [labels[i] for i in rng.permutation(len(labels))]
        queues: dict[int, list[int]] = {label: [] for label in labels}
        out: list[Generated] = []
        while len(out) < count:
            for label in turn:
                if len(out) >= count:
                    break
                if not queues[label]:
                    queues[label] = [int(i) for i in rng.permutation(len(groups[label]))]
                out.append(groups[label][queues[label].pop()])
        return out

    def per_class(self, count: int, rng: np.random.Generator) -> list[Generated]:
        """Up to ``count`` entries of every class (a seeded draw without replacement)."""
        out: list[Generated] = []
        for _, members in sorted(self.by_label().items()):
            for i in rng.permutation(len(members))[:count]:
                out.append(members[int(i)])
        return out

    def save(self, path: Path) -> None:
        write_json(path, [asdict(e) for e in self.entries], indent=0)

    @classmethod
    def load(cls, path: Path) -> GeneratedPool:
        """The pool saved in ``path`` (empty when there is no file yet)."""
        if not path.exists():
            return cls()
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
            return cls(Generated(**row) for row in rows)
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(f"cannot read the generated pool {str(path)!r}: {exc}") from None
