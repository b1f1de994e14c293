"""What a run checks before anything heavy loads: the model and torch take seconds to import and load, so
a missing key, a folder that already holds a run, or a missing data file must fail before them.

:func:`preflight` imports nothing heavy; ``rehearsal run`` calls it before it imports the run loop, and
the loop calls it again (a library caller gets the same early errors).
"""

from __future__ import annotations

import os
from pathlib import Path

from rehearsal.crypto.keys import KeyRing
from rehearsal.crypto.master_key import MASTER_KEY_ENV
from rehearsal.errors import ConfigError, MissingKeyError, NotFoundError
from rehearsal.run.config import RunConfig

__all__ = ["KEY_FILE", "STATE_FILE", "preflight", "run_keys"]

# A run folder's state and the key file a user may put beside it (never written by the library).
STATE_FILE, KEY_FILE = "state.json", "memory.key"


def run_keys(config: RunConfig, out: Path, keys: KeyRing | None = None) -> KeyRing | None:
    """The master key of the run's memory: ``keys`` if given, else ``REHEARSAL_MASTER_KEY``, else a key file
    the user put in the output folder; None for a method that keeps no memory.

    The library never writes a master key itself: ``rehearsal keygen --out FILE`` is the explicit way to
    make one (scripts/main.sh does that for the demo run).
    """
    if not config.keeps_memory:
        return None
    if keys is not None:
        return keys
    if os.environ.get(MASTER_KEY_ENV):
        return KeyRing.from_env(MASTER_KEY_ENV)
    path = out / KEY_FILE
    if path.exists():
        return KeyRing.from_file(path)
    raise MissingKeyError(
        f"method {config.method!r} keeps an encrypted memory: set {MASTER_KEY_ENV}, pass --key-file "
        f"(make a key with 'rehearsal keygen --out FILE') or put one in {str(path)!r}"
    )


def preflight(
    config: RunConfig, *, output_dir: str | os.PathLike[str] | None, resume: bool, keys: KeyRing | None = None
) -> KeyRing | None:
    """Check ``config`` against its output folder and inputs; the memory's key (None: memoryless)."""
    out = Path(output_dir if output_dir is not None else config.output_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output_dir {str(out)!r} exists and is not a folder")
    if (out / STATE_FILE).is_file() and not resume:
        raise ConfigError(f"{str(out)!r} already holds a run; resume it (--resume) or use another output dir")
    if config.data is not None and not Path(config.data).is_file():
        raise NotFoundError(f"the run's data file {config.data!r} does not exist")
    if config.gate is not None and not config.keeps_memory:
        raise ConfigError(f"a gate governs the updates of a run with a memory; {config.method!r} keeps none")
    return run_keys(config, out, keys)
