"""What the benchmark scripts ask of a run folder written by ``rehearsal.runner.loop.run``."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["finished"]


def finished(folder: Path) -> bool:
    """Whether the run in ``folder`` trained every phase: its saved state (rewritten after each phase)
    has the accuracy matrix's last row measured."""
    state = folder / "state.json"
    if not state.is_file():
        return False
    rows = json.loads(state.read_text())["accuracy"]["matrix"]
    return all(value is not None for value in rows[-1])
