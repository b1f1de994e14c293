"""What a run keeps so that it can resume: ``state.json`` in the output folder, and the comparison that
refuses to resume a run with a different config.

A run that keeps a memory has its master key, and its ``state.json`` carries a keyed tag (HMAC under a
key derived from the master key, as a deployment's files do) over everything else in it: the accuracy
matrix, the per-example baseline the next phase's gate compares against, the memory generation and the
checkpoint a resume loads. A resume checks it first, so a state edited by someone without the key is an
:class:`~rehearsal.errors.IntegrityError`, not a run that continues from doctored figures. A run without
a memory (naive, ewc, multitask) has no key to seal with, so its state stays plain. A state without a tag
is one written before states were sealed (a version-1 run folder) and still resumes; its next write
seals it. Removing the tag therefore goes unnoticed: the tag shows who wrote a state, it cannot show that
a state once carried one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from rehearsal._files import read_json, write_json
from rehearsal.crypto.keys import KeyRing, keyed_tag, same_tag
from rehearsal.errors import ConfigError, IntegrityError
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
    "read_state",
    "run_memory",
    "saved_config",
    "write_state",
]

# A run's folder: its state, and the memory it keeps (other verbs open that memory through the run).
STATE_FILE, MEMORY_DIR = "state.json", "memory"
_TAG_PURPOSE = "run-state-tag"


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
_BEFORE_THEY_EXISTED: dict[str, Any] = {
    "length_buckets": 1,
    "bf16_training": False,
    "encoder_backend": "fp32",
    "bf16_eval": False,
}


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


def _tag(keys: KeyRing, state: dict[str, Any]) -> str:
    # Over the state as JSON reads it back (an int key becomes text, which sorts differently).
    return keyed_tag(keys, _TAG_PURPOSE, json.loads(json.dumps(state)))


def read_state(out: Path, keys: KeyRing | None) -> dict[str, Any]:
    """The state of the run in ``out``, its tag checked under ``keys`` (the run's master key; None for a
    run without a memory). An untagged state is read as one written before states were sealed."""
    path = out / STATE_FILE
    state = read_json(path)
    tag = state.pop("tag", None)
    if tag is None:
        return state
    if keys is None:
        raise IntegrityError(f"run state {str(path)!r} is sealed: it needs its run's master key to be read")
    if not same_tag(tag, _tag(keys, state)):
        raise IntegrityError(f"run state {str(path)!r} fails its check (edited, or sealed with another key)")
    return state


def load_state(
    out: Path, config: RunConfig, *, resume: bool, keys: KeyRing | None = None
) -> dict[str, Any] | None:
    """The saved state of the run in ``out`` (None: a fresh run), checked under ``keys`` (``read_state``),
    refusing a resume with another config."""
    path = out / STATE_FILE
    if not path.is_file():
        return None
    if not resume:
        raise ConfigError(f"{str(out)!r} already holds a run; resume it (--resume) or use another output dir")
    state = read_state(out, keys)
    saved = saved_config(state["config"])
    if comparable(saved) != comparable(config):
        ours, theirs = comparable(config), comparable(saved)
        changed = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))
        trained = saved.to_dict()
        was = ", ".join(f"{k}={json.dumps(trained[k])}" for k in changed if k in trained)
        raise ConfigError(
            f"cannot resume {str(out)!r} with a different config; changed: {changed} (the run was "
            f"trained with {was}: pass those with --set to resume it, or use another output dir)"
        )
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
    keys: KeyRing | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """What a resume needs after ``completed`` phases (0: the run has started, nothing is trained);
    ``extra`` adds keys of its own (an online run's position in the stream). With ``keys`` (a run that
    keeps a memory) the state carries a tag over the rest under them."""
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
    if keys is not None:
        state["tag"] = _tag(keys, state)
    write_json(out / STATE_FILE, state)
