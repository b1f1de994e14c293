"""What every verb module of the CLI shares: the report a verb returns, exit statuses, keys and opening.

The memory and the key ring are imported where they are used, so that ``--help`` and ``keygen`` start
without loading FAISS or the encoder.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rehearsal.crypto.master_key import MASTER_KEY_ENV, resolve_master_key
from rehearsal.deployment.folder import deployment_memory, is_deployment
from rehearsal.errors import ConfigError, MissingKeyError, NotFoundError, RehearsalError, ValidationError
from rehearsal.governance.audit_log import AuditLog, default_log_path
from rehearsal.governance.audited import TENANT_NAMES, AuditedMemory
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.runner.state import is_run_folder, run_memory
from rehearsal.store.layout import is_memory_folder, peek_manifest
from rehearsal.store.registry import is_server, server_location_without_password, server_manifest
from rehearsal.store.where import parse_where

if TYPE_CHECKING:
    from rehearsal.crypto.keys import KeyRing

__all__ = [
    "ANCHOR_HELP",
    "EXIT_ERROR",
    "EXIT_FAIL",
    "EXIT_NEEDS_APPROVAL",
    "EXIT_OK",
    "EXIT_USAGE",
    "KEY_ENV",
    "TENANT_NAMES_ENV",
    "Report",
    "Verb",
    "audit_tenant_names",
    "audited",
    "encrypted",
    "keys_from_args",
    "memory_exists",
    "memory_folder",
    "missing_key",
    "open_memory",
    "parse_where_option",
    "require_memory",
    "required_keys",
]

KEY_ENV = MASTER_KEY_ENV
ANCHOR_HELP = "refuse the memory if it is older than this anchor ('rehearsal audit anchor PATH --out FILE')"
TENANT_NAMES_ENV = "REHEARSAL_AUDIT_TENANT_NAMES"
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
        if is_server(path):
            manifest: Any = server_manifest(path)
        else:
            manifest = peek_manifest(path)
    except RehearsalError:
        return True
    return not isinstance(manifest, dict) or manifest.get("encrypted") is not False


def memory_exists(path: str) -> bool:
    """Whether ``path`` (a folder or a server URL) already holds something a new memory must not overwrite."""
    if is_server(path):
        try:
            server_manifest(path)
        except RehearsalError:
            return False
        return True
    folder = Path(path)
    return folder.is_dir() and any(folder.iterdir())


def memory_folder(path: str) -> str:
    """``path`` itself, or the memory inside it when ``path`` is a ``rehearsal run`` output folder or a
    deployment: every verb that takes a memory also takes the run or deployment that keeps one. A server
    URL comes back without its password, which moves to where the server's client reads it (so that the
    reports and messages that echo PATH never print it)."""
    if is_server(path):
        return server_location_without_password(path)
    folder = Path(path)
    if not is_memory_folder(folder) and is_deployment(folder):
        return str(deployment_memory(folder))
    if not is_memory_folder(folder) and is_run_folder(folder) and is_memory_folder(run_memory(folder)):
        return str(run_memory(folder))
    return path


def require_memory(path: str) -> None:
    """Fail on a path that holds no memory (a typo must not read as "nothing recorded")."""
    if is_server(path):
        server_manifest(path)  # StoreFormatError when the schema holds none
        return
    if not is_memory_folder(path):
        what = "does not exist" if not Path(path).exists() else "holds no memory (no memory.json)"
        raise NotFoundError(f"{path!r} {what}: give a memory folder or a 'rehearsal run' output folder")


def open_memory(args: argparse.Namespace, *, read_only: bool, keys: KeyRing | None = None) -> RehearsalMemory:
    """Open PATH with ``keys`` (default: those from the options or the environment)."""

    keys = keys if keys is not None else keys_from_args(args)
    if keys is not None and not encrypted(args.path):
        if args.key_file is not None:
            raise ValidationError(f"memory at {args.path!r} is not encrypted; it takes no --key-file")
        keys = None  # an ambient key in the environment is not meant for this memory
    from rehearsal.cli.encoder_options import check_encoder_given, encoder_from_args

    if hasattr(args, "encoder"):  # a verb that embeds text: it needs the memory's own encoder
        check_encoder_given(args, args.path)
    try:
        return RehearsalMemory.open(
            args.path,
            keys=keys,
            read_only=read_only,
            encoder=encoder_from_args(args),
            vectors=getattr(args, "vectors", None),
            anchor=getattr(args, "anchor", None),
        )
    except MissingKeyError:
        if keys is None:
            raise missing_key(args.path) from None
        raise


def parse_where_option(text: str | None) -> dict[str, Any] | None:
    """``--where`` as a filter, checked before the memory opens (bad JSON, fields or operators)."""
    if text is None:
        return None
    try:
        where = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError(f"--where is not valid JSON: {exc.msg} at character {exc.pos}") from None
    if not isinstance(where, dict):
        raise ValidationError(f"--where must be a JSON object, got {type(where).__name__}")
    parse_where(where)
    return where


def audited(args: argparse.Namespace, memory: RehearsalMemory, keys: KeyRing | None = None) -> Any:
    """``memory`` behind its audit log (``PATH/audit.log``) when it is encrypted, so every mutation a verb
    makes is logged; an unencrypted embedding-only memory has no key to sign a log with, and a memory on a
    server has no folder to keep the log in (its mutations are not audited by the CLI)."""

    keys = keys if keys is not None else keys_from_args(args)
    if keys is None or is_server(args.path) or not encrypted(args.path):
        return memory
    log = AuditLog.open(default_log_path(args.path), keys)
    return AuditedMemory(memory, log, actor="cli", tenant_names=audit_tenant_names())


def audit_tenant_names() -> str:
    """How the audit log names tenants: ``digest`` (a keyed pseudonym, the default) or ``clear``, from
    REHEARSAL_AUDIT_TENANT_NAMES."""
    value = os.environ.get(TENANT_NAMES_ENV, "digest").strip() or "digest"
    if value not in TENANT_NAMES:
        raise ConfigError(f"{TENANT_NAMES_ENV} must be one of {list(TENANT_NAMES)}, got {value!r}")
    return value
