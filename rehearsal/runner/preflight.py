"""What a run checks before anything heavy loads: torch and the model take seconds to import and load, so
a missing key, a folder that already holds a run (or holds one with another config), or a missing data
file must fail before them.

:func:`preflight` imports nothing heavy; ``rehearsal run`` calls it before it imports the run loop, and
the loop calls it again (a library caller gets the same early errors).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rehearsal.crypto.keys import KeyRing
from rehearsal.crypto.master_key import MASTER_KEY_ENV, resolve_master_key
from rehearsal.errors import ConfigError, MissingKeyError, NotFoundError
from rehearsal.row_files import read_rows, row_file_kind
from rehearsal.runner.config import RunConfig
from rehearsal.runner.state import load_state

__all__ = ["KEY_FILE", "Preflight", "preflight"]

# The key file a user may put in a run's output folder (never written by the library).
KEY_FILE = "memory.key"


class Preflight:
    """What the checks found: the memory's key (None: the method keeps no memory) and the saved state."""

    def __init__(self, keys: KeyRing | None, state: dict[str, Any] | None) -> None:
        self.keys = keys
        self.state = state

    def __repr__(self) -> str:  # the key ring's own repr redacts; say only whether there is one
        return f"Preflight(keys={'<redacted>' if self.keys else None}, resuming={self.state is not None})"


def _run_keys(config: RunConfig, out: Path, keys: KeyRing | None) -> KeyRing | None:
    """``keys`` if given, else ``REHEARSAL_MASTER_KEY``, else ``memory.key`` in the output folder."""
    if not config.keeps_memory:
        return None
    found = keys if keys is not None else resolve_master_key(fallback_file=out / KEY_FILE)
    if found is None:
        raise MissingKeyError(
            f"method {config.method!r} keeps an encrypted memory: set {MASTER_KEY_ENV}, pass --key-file "
            f"(make a key with 'rehearsal keygen --out FILE') or put one in {str(out / KEY_FILE)!r}"
        )
    return found


def _check_data_fields(config: RunConfig, file: Path) -> None:
    """The fields the config names are columns of the data file (its first row), so a misspelt field
    fails here, in a second, naming the file's columns, not after the model loaded."""
    first = next(iter(read_rows(file, row_file_kind(file))), None)
    if first is None:
        return  # an empty file: the stream loader says so
    row = first[1]
    for key in ("text_field", "label_field", "task_field"):
        name = getattr(config, key)
        if name not in row:
            raise ConfigError(
                f"{key} {name!r} is not a column of {file.name}, whose columns are {sorted(row)}: "
                f"set {key} in the config (or --set {key}=COLUMN)"
            )


def preflight(
    config: RunConfig, *, output_dir: str | os.PathLike[str] | None, resume: bool, keys: KeyRing | None = None
) -> Preflight:
    """Check ``config`` against its output folder and inputs, loading nothing heavy."""
    out = Path(output_dir if output_dir is not None else config.output_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output_dir {str(out)!r} exists and is not a folder")
    if config.data is not None and not Path(config.data).is_file():
        raise NotFoundError(f"the run's data file {config.data!r} does not exist")
    if config.data is not None:
        _check_data_fields(config, Path(config.data))
    if config.gate is not None and not config.keeps_memory:
        raise ConfigError(f"a gate governs the updates of a run with a memory; {config.method!r} keeps none")
    found = _run_keys(config, out, keys)
    state = load_state(out, config.replace(output_dir=str(out)), resume=resume, keys=found)
    return Preflight(found, state)
