"""``Example``: one piece of text with its label, the one shape every part of the package passes around.

A run's task streams (``rehearsal.runner.tasks``), a deployment's update data and shadow requests
(``rehearsal.deployment.examples``) and the generator's training data (``rehearsal.methods.generative``)
all hold these. ``label`` is None only for a request that has not been labelled yet (``rehearsal shadow``).
Code that needs the label as a string reads :attr:`Example.known_label`, which refuses an unlabelled
example (a stream's tasks read it, so a stream never holds one); an update refuses unlabelled data where
it reads its file (``read_examples``).
``tags`` are governance tags (``safety``, ``urgent``); ``tenant`` names whose data it is, for erasure.

Not to be confused with an ingest row (``rehearsal.cli.records.Record``): text and free metadata on its
way into a memory, with no label of its own.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass

from rehearsal.errors import ValidationError

__all__ = ["Example"]


@dataclass(frozen=True)
class Example:
    text: str
    label: str | None
    task: str = "default"
    _: KW_ONLY
    tags: tuple[str, ...] = ()
    tenant: str = "default"

    @property
    def known_label(self) -> str:
        """The label, for code that learns from or scores the example; an unlabelled one is refused."""
        if self.label is None:
            # The text stays out of the message: it may be personal data bound for a log.
            raise ValidationError(f"an example of task {self.task!r} has no label, and this use needs one")
        return self.label

    def metadata(self) -> dict[str, object]:
        """The memory metadata of this example (what ``RehearsalMemory.add`` stores beside it)."""
        return {"task": self.task, "label": self.label, "tags": list(self.tags)}
