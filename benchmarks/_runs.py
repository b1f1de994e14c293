"""What the benchmark scripts ask of a run folder written by ``rehearsal.runner.loop.run``: asked of the
runner, which owns the folder's files (nothing here reads them)."""

from __future__ import annotations

from pathlib import Path

from rehearsal.runner.state import is_finished

__all__ = ["finished"]


def finished(folder: Path) -> bool:
    """Whether the run in ``folder`` trained every phase."""
    return is_finished(folder)
