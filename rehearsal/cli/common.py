"""What every verb module of the CLI shares: the report a verb returns, exit statuses, keys and opening.

The memory and the key ring are imported where they are used, so that ``--help`` and ``keygen`` start
without loading FAISS or the encoder.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rehearsal.crypto.master_key import MASTER_KEY_ENV, resolve_master_key
from rehearsal.errors import MissingKeyError, ValidationError
from rehearsal.memory.facade import RehearsalMemory

if TYPE_CHECKING:
    from rehearsal.crypto.keys import KeyRing

__all__ = [
    "EXIT_ERROR",
    "EXIT_FAIL",
    "EXIT_NEEDS_APPROVAL",
    "EXIT_OK",
    "EXIT_USAGE",
    "KEY_ENV",
    "Report",
    "Verb",
    "encrypted",
    "keys_from_args",
    "missing_key",
    "open_memory",
    "required_keys",
]

KEY_ENV = MASTER_KEY_ENV
EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
# A gate's outcomes that are not errors: a pipeline branches on them.
EXIT_NEEDS_APPROVAL = 3
EXIT_FAIL = 4


@dataclass
class Report:
    """What a verb did: ``data`` for ``--json``, ``lines`` for people."""

    data: dict[str, Any]
    lines: list[str] = field(default_factory=list)
    status: int = 0  # the exit status: non-zero for an outcome that is not an error (e.g. a failed gate)


@dataclass(frozen=True)
class Verb:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], Report]
    uses_memory: bool = True  # takes PATH and the key options


def keys_from_args(args: argparse.Namespace) -> KeyRing | None:
    """The master key from ``--key-file`` or the environment, or None when neither gives one."""
    return resolve_master_key(args.key_file)


def required_keys(args: argparse.Namespace) -> KeyRing:
    """The master key, which an audit log always needs."""
    keys = keys_from_args(args)
    if keys is None:
        raise MissingKeyError(f"the audit log is keyed by the master key: set {KEY_ENV} or pass --key-file")
    return keys


def missing_key(path: str) -> MissingKeyError:
    return MissingKeyError(
        f"memory at {path!r} is encrypted: set {KEY_ENV} to its base64 master key or pass --key-file"
    )


def encrypted(path: str) -> bool:
    """What the manifest says; True when it cannot be read, so that opening reports the problem."""
    try:
        manifest = json.loads((Path(path) / "memory.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return True
    return not isinstance(manifest, dict) or manifest.get("encrypted") is not False


def open_memory(args: argparse.Namespace, *, read_only: bool, keys: KeyRing | None = None) -> RehearsalMemory:
    """Open PATH with ``keys`` (default: those from the options or the environment)."""

    keys = keys if keys is not None else keys_from_args(args)
    if keys is not None and not encrypted(args.path):
        if args.key_file is not None:
            raise ValidationError(f"memory at {args.path!r} is not encrypted; it takes no --key-file")
        keys = None  # an ambient key in the environment is not meant for this memory
    try:
        return RehearsalMemory.open(args.path, keys=keys, read_only=read_only)
    except MissingKeyError:
        if keys is None:
            raise missing_key(args.path) from None
        raise
