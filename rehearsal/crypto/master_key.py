"""The one resolver of the master key: an explicit key file, else the environment, else a fallback file.

The command line and the run loop both come here, so the variable's name and the order of the sources
live in one place. Nothing here writes a key: ``rehearsal keygen --out FILE`` is the explicit way to make one.
"""

from __future__ import annotations

import os
from pathlib import Path

from rehearsal.crypto.keys import KeyRing

__all__ = ["MASTER_KEY_ENV", "resolve_master_key"]

MASTER_KEY_ENV = "REHEARSAL_MASTER_KEY"


def resolve_master_key(
    key_file: str | os.PathLike[str] | None = None, *, fallback_file: str | os.PathLike[str] | None = None
) -> KeyRing | None:
    """The master key from ``key_file``, else ``$REHEARSAL_MASTER_KEY``, else an existing ``fallback_file``.

    Returns None when none of them gives one; a source that is present but unreadable or malformed raises
    (the messages never quote key material).
    """
    if key_file is not None:
        return KeyRing.from_file(key_file)
    if os.environ.get(MASTER_KEY_ENV, "").strip():
        return KeyRing.from_env(MASTER_KEY_ENV)
    if fallback_file is not None and Path(fallback_file).exists():
        return KeyRing.from_file(fallback_file)
    return None
