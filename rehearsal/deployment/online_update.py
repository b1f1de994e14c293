"""``rehearsal update --online``: a stream of small labelled batches (a day's logs) applied in arrival order,
gated on a cadence instead of on every batch.

The examples are cut, in the file's order, into batches of ``batch_size``; every ``gate_every`` batches
make one window, and each window is one ordinary governed update (``rehearsal.deployment.update``):
a candidate trained from the deployed version with replay, scored, gated once, versioned. Inside a
window the examples enter the memory batch by batch, each batch its own commit and its own ``ingest``
entry in the audit log. A window the gate blocks stops the stream there: the windows before it are
deployed, the blocked one is undone as any blocked update is, and the result says from which example a
retry (after ``rehearsal approve``, or with better data) goes on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from rehearsal.crypto.keys import KeyRing
from rehearsal.deployment.examples import read_examples
from rehearsal.deployment.result import UpdateResult
from rehearsal.deployment.update import update
from rehearsal.errors import UpdateBlockedError, ValidationError

__all__ = ["OnlineUpdate", "update_online"]


@dataclass
class OnlineUpdate:
    """What an online update did: a result per deployed window, and the block that stopped it (if any)."""

    batch_size: int
    gate_every: int
    examples: int
    windows: list[UpdateResult] = field(default_factory=list)
    blocked: dict[str, Any] | None = None  # the window's first example, decision, reasons, update id

    @property
    def applied(self) -> int:
        """How many of the stream's examples went in (a retry starts after them)."""
        return min(len(self.windows) * self.batch_size * self.gate_every, self.examples)


def _positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError(f"'{name}' must be a positive int, got {value!r}")
    return value


def update_online(
    path: str | os.PathLike[str],
    data: str | os.PathLike[str],
    *,
    batch_size: int = 32,
    gate_every: int = 4,
    keys: KeyRing | None = None,
    task: str = "default",
) -> OnlineUpdate:
    """Apply the examples in ``data`` to the deployment in ``path`` as described in the module docstring."""
    batch_size, gate_every = _positive("batch_size", batch_size), _positive("gate_every", gate_every)
    examples = read_examples(data, task=task)  # the whole file is checked before anything changes
    done = OnlineUpdate(batch_size, gate_every, len(examples))
    window = batch_size * gate_every
    for start in range(0, len(examples), window):
        try:
            result = update(path, examples[start : start + window], keys=keys, admit_batch=batch_size)
        except UpdateBlockedError as exc:
            done.blocked = {
                "first_example": start,
                "decision": exc.decision,
                "reasons": list(exc.reasons),
                "update": exc.update,
            }
            break
        done.windows.append(result)
    return done
