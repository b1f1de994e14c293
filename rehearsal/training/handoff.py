"""What a finished run hands a deployment that starts from it (``rehearsal init-deployment --from-run``).

The runner reads it out of a run's folder (``rehearsal.runner.handoff``) and the deployment takes it as
it is, so neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rehearsal.examples import Example

__all__ = ["RunHandoff"]


@dataclass(frozen=True)
class RunHandoff:
    """A finished run's memory folder, its stream's label names (a run's memory stores label ids, which
    index them), its test examples, and the model it started from."""

    memory: Path
    labels: list[str]
    tests: list[Example]
    model: str | None
