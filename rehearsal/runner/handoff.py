"""Reading a finished run's folder for a deployment that starts from it (see ``training.handoff``)."""

from __future__ import annotations

import os
from pathlib import Path

from rehearsal.crypto.keys import KeyRing
from rehearsal.errors import NotFoundError
from rehearsal.runner.state import STATE_FILE, read_state, run_memory, saved_config
from rehearsal.store.layout import is_memory_folder
from rehearsal.training.handoff import RunHandoff

__all__ = ["run_handoff"]


def run_handoff(run_dir: str | os.PathLike[str], *, keys: KeyRing | None = None) -> RunHandoff:
    """A finished run's memory, its stream's label names (a run stores label ids), test sets and model;
    its state checked under ``keys`` (the master key of the run's memory, which sealed it)."""
    from rehearsal.runner.loop import load_stream

    folder = Path(run_dir)
    state_file = folder / STATE_FILE
    if not state_file.is_file() or not is_memory_folder(run_memory(folder)):
        raise NotFoundError(f"{str(folder)!r} is not a finished 'rehearsal run' with a memory")
    config = saved_config(read_state(folder, keys)["config"])
    stream = load_stream(config)
    tests = [ex for task in stream.tasks for ex in task.test]
    return RunHandoff(run_memory(folder), list(stream.labels), tests, config.model)
