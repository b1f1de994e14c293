"""What a run keeps so that it can resume: ``state.json`` in the output folder, and the comparison that
refuses to resume a run with a different config."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from rehearsal._files import write_json
from rehearsal.errors import ConfigError
from rehearsal.runner.config import RunConfig
from rehearsal.runner.metrics import AccuracyMatrix
from rehearsal.runner.online_config import OnlineConfig

__all__ = [
    "MEMORY_DIR",
    "STATE_FILE",
    "comparable",
    "is_finished",
    "is_run_folder",
    "load_state",
    "run_memory",
    "saved_config",
    "write_state",
]

# A run's folder: its state, and the memory it keeps (other verbs open that memory through the run).
STATE_FILE, MEMORY_DIR = "state.json", "memory"


def is_run_folder(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` is a ``rehearsal run`` output folder (it has a run state)."""
    return (Path(folder) / STATE_FILE).is_file()


def run_memory(folder: str | os.PathLike[str]) -> Path:
    """Where the run in ``folder`` keeps its memory (there or not)."""
    return Path(folder) / MEMORY_DIR


# Settings that may change between an interrupted run and its resume without changing the experiment
# (length-sorted evaluation gives the same predictions as the given order, float rounding aside).
_RESUMABLE_CHANGES = ("output_dir", "progress", "length_sorted_eval")
# Settings added after runs were saved without them, with the value those runs were trained under.
_BEFORE_THEY_EXISTED = {"length_buckets": 1}


def comparable(config: RunConfig) -> dict[str, Any]:
    """The config without the settings a resume may change: what identifies the experiment."""
    data = config.to_dict()
    for name in _RESUMABLE_CHANGES:
        data.pop(name)
    if not config.online and config.streaming == OnlineConfig():
        # Settings added with online runs, left out while unused: an offline run keeps the id (a digest
        # of this) it had before they existed.
        data.pop("online")
        data.pop("streaming")
    if config.model_kind == "classifier":
        data.pop("model_kind")  # likewise for runs from before causal-LM runs
    for name, old in _BEFORE_THEY_EXISTED.items():
        if data[name] == old:
            data.pop(name)  # a run trained as before the setting existed keeps its id
    return data


def saved_config(data: dict[str, Any]) -> RunConfig:
    """The config a state file saved; a setting it predates reads as the value it was trained under."""
    return RunConfig.from_dict({**_BEFORE_THEY_EXISTED, **data})


def is_finished(out: Path) -> bool:
    """Whether the run in ``out`` trained every phase: its saved state (rewritten after each phase) has
    the accuracy matrix's last row measured. A folder without a readable state holds no finished run."""
    try:
        state = json.loads((out / STATE_FILE).read_text(encoding="utf-8"))
        rows = state["accuracy"]["matrix"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return bool(rows) and all(value is not None for value in rows[-1])


def load_state(out: Path, config: RunConfig, *, resume: bool) -> dict[str, Any] | None:
    """The saved state of the run in ``out`` (None: a fresh run), refusing a resume with another config."""
    path = out / STATE_FILE
    if not path.is_file():
        return None
    if not resume:
        raise ConfigError(f"{str(out)!r} already holds a run; resume it (--resume) or use another output dir")
    state: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    saved = saved_config(state["config"])
    if comparable(saved) != comparable(config):
        changed = sorted(k for k, v in comparable(config).items() if comparable(saved).get(k) != v)
        raise ConfigError(f"cannot resume {str(out)!r} with a different config; changed: {changed}")
    return state


def write_state(
    out: Path,
    config: RunConfig,
    completed: int,
    weights: Path | None,
    matrix: AccuracyMatrix,
    correct: dict[str, np.ndarray],
    generation: int,
    totals: dict[str, Any],
    *,
    extra: dict[str, Any] | None = None,
) -> None:
    """What a resume needs after ``completed`` phases (0: the run has started, nothing is trained);
    ``extra`` adds keys of its own (an online run's position in the stream)."""
    state = {
        "config": config.to_dict(),
        "completed_phases": completed,
        "accuracy": matrix.to_dict(),
        # Per-example results of the last evaluation: the next phase's staging baseline.
        "correct": {t: arr.astype(int).tolist() for t, arr in correct.items()},
        "memory_generation": generation,
        "totals": totals,
    }
    if weights is not None:
        state["checkpoint"] = str(weights.relative_to(out))
    state.update(extra or {})
    write_json(out / STATE_FILE, state)
