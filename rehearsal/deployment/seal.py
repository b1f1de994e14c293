"""Keyed seals for the plain files a deployment reads back: its config and each version's weights folder.

The memory, the suite and the audit log authenticate what they hold; a deployment's ``deployment.json``
(the gate's margin, the strategy) and its weights folders (adapter weights, ``state.json`` with the labels
and the router) are plain files beside them. Anyone who can write the folder but does not hold the key
could loosen the gate or swap a version's weights, and ``promote`` / ``shadow`` / ``update`` would use
them. So each is sealed with an HMAC under a key derived from the deployment's key ring:

- ``deployment.json`` carries a ``tag`` over its format, its identity (``id``) and config;
- every weights folder carries ``seal.json``: the SHA-256 of each file in it and a tag over that list,
  the folder's name and the deployment's identity (a folder renamed to stand for another update, or
  copied from another deployment under the same key, does not verify).

A file added, removed or changed after sealing, or a seal made under another key or for another
deployment, is an :class:`~rehearsal.errors.IntegrityError` before anything in the folder is loaded.
Seals of format 1 (before they named their deployment) are read only by ``rehearsal migrate-deployment``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from rehearsal._files import atomic_write
from rehearsal.crypto.keys import KeyRing, keyed_tag, same_tag
from rehearsal.errors import IntegrityError

__all__ = ["SEAL_FILE", "config_tag", "is_unbound", "seal_weights", "verify_weights"]

SEAL_FILE = "seal.json"
_SEAL_FORMAT = "rehearsal-weights-seal/2"
_UNBOUND_SEAL_FORMAT = "rehearsal-weights-seal/1"  # before a seal named its deployment
_WEIGHTS_PURPOSE = "deployment-weights-seal"
_CONFIG_PURPOSE = "deployment-config-tag"
_CHUNK = 1 << 20


def config_tag(keys: KeyRing, body: dict[str, Any]) -> str:
    """The tag ``deployment.json`` carries over ``body`` (its format and config)."""
    return keyed_tag(keys, _CONFIG_PURPOSE, body)


def _digest(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            sha.update(chunk)
    return sha.hexdigest()


def _manifest(folder: Path) -> dict[str, str]:
    """Relative POSIX path -> SHA-256 of every file under ``folder`` except the seal itself."""
    return {
        path.relative_to(folder).as_posix(): _digest(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.relative_to(folder).as_posix() != SEAL_FILE
    }


def seal_weights(folder: Path, keys: KeyRing, *, deployment: str) -> None:
    """Write ``folder/seal.json`` over what ``folder`` holds now, for the deployment whose identity is
    ``deployment``; call it once the folder is complete."""
    body = {
        "format": _SEAL_FORMAT,
        "deployment": deployment,
        "folder": folder.name,
        "files": _manifest(folder),
    }
    seal = {**body, "tag": keyed_tag(keys, _WEIGHTS_PURPOSE, body)}
    atomic_write(folder / SEAL_FILE, (json.dumps(seal, indent=2, sort_keys=True) + "\n").encode())


def is_unbound(folder: Path) -> bool:
    """Whether ``folder``'s seal is one of format 1 (naming no deployment), which migration re-seals."""
    try:
        seal = json.loads((folder / SEAL_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(seal, dict) and seal.get("format") == _UNBOUND_SEAL_FORMAT


def verify_weights(folder: Path, keys: KeyRing, *, deployment: str, unbound: bool = False) -> None:
    """Raise :class:`IntegrityError` unless ``folder`` holds exactly what this key ring sealed in it for
    the deployment ``deployment``. ``unbound``: accept a format-1 seal (which names no deployment)
    instead; only migration reads those."""
    where = repr(str(folder))
    try:
        seal = json.loads((folder / SEAL_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IntegrityError(f"weights folder {where} is not sealed by this deployment") from None
    except (OSError, ValueError) as exc:
        raise IntegrityError(f"cannot read the seal of weights folder {where}: {exc}") from None
    expected = _UNBOUND_SEAL_FORMAT if unbound else _SEAL_FORMAT
    readable = isinstance(seal, dict) and seal.get("format") == expected
    if not readable or not isinstance(seal.get("tag"), str):
        if isinstance(seal, dict) and seal.get("format") == _UNBOUND_SEAL_FORMAT:
            raise IntegrityError(
                f"weights folder {where} has a seal that names no deployment (an earlier rehearsal's): "
                "run 'rehearsal migrate-deployment' on its deployment"
            )
        raise IntegrityError(f"weights folder {where} has no seal this version of rehearsal reads")
    body = {k: v for k, v in seal.items() if k != "tag"}
    if not same_tag(seal["tag"], keyed_tag(keys, _WEIGHTS_PURPOSE, body)):
        raise IntegrityError(f"the seal of weights folder {where} fails its check (edited, or another key)")
    if not unbound and body.get("deployment") != deployment:
        raise IntegrityError(f"weights folder {where} was sealed by another deployment")
    if body.get("folder") != folder.name:
        raise IntegrityError(f"weights folder {where} carries the seal of {body.get('folder')!r}")
    sealed: dict[str, str] = body.get("files") or {}
    found = _manifest(folder)
    changed = sorted(name for name in set(sealed) | set(found) if sealed.get(name) != found.get(name))
    if changed:
        raise IntegrityError(
            f"weights folder {where} changed since it was sealed: {', '.join(changed[:5])}"
            + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        )
