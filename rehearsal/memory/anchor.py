"""An external anchor against a whole-folder rollback (issue 28).

Everything inside a memory's folder is checked against everything else inside it, so a folder put back
whole from an older copy (the store, its head file and its audit log together) is consistent and opens.
Only something kept elsewhere can tell: ``rehearsal audit anchor PATH --out FILE`` writes the memory's
identity, its generation and its audit log's head (sequence number and digest of its last entry) to a
file the user keeps outside the folder (another disk, a ticket, a configuration repository), and
``RehearsalMemory.open(..., anchor=FILE)`` (``--anchor FILE`` on the CLI) refuses a memory older than its
anchor: another store, or a generation below the anchored one. The audit log is checked against the
anchor by ``rehearsal audit verify --anchor FILE`` (``rehearsal.governance.anchoring``): it must still hold
the anchored entry, unchanged.

The file carries an HMAC under a key derived from the memory's master key, so it cannot be edited to an
older generation without the key; an unencrypted memory's anchor has no tag and is trusted as kept.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Protocol, TypeVar

from rehearsal._files import atomic_write
from rehearsal.crypto.keys import KeyRing, keyed_tag, same_tag
from rehearsal.errors import IntegrityError, NotFoundError, StoreFormatError

__all__ = ["Anchor", "anchored", "check_anchor", "read_anchor", "write_anchor"]


class _Memory(Protocol):
    @property
    def store_id(self) -> str: ...
    @property
    def generation(self) -> int: ...
    def close(self) -> None: ...


M = TypeVar("M", bound=_Memory)
ANCHOR_FORMAT = "rehearsal-anchor/1"
_PURPOSE = "memory-anchor-tag"


@dataclasses.dataclass(frozen=True)
class Anchor:
    """Where a memory stood when it was anchored."""

    store_id: str
    generation: int
    audit_seq: int | None = None  # the audit log's last entry then (None: the memory keeps no log)
    audit_digest: str | None = None


def _tag(keys: KeyRing, body: dict[str, Any]) -> str:
    return keyed_tag(keys, _PURPOSE, body)


def write_anchor(path: str | os.PathLike[str], anchor: Anchor, keys: KeyRing | None) -> None:
    """Write ``anchor`` to ``path`` (replacing an older anchor there), tagged when there are keys."""
    body = {"format": ANCHOR_FORMAT, **dataclasses.asdict(anchor)}
    tag = _tag(keys, body) if keys is not None else None
    atomic_write(Path(path), (json.dumps({**body, "tag": tag}, indent=2, sort_keys=True) + "\n").encode())


def read_anchor(path: str | os.PathLike[str], keys: KeyRing | None) -> Anchor:
    """The anchor in ``path``; IntegrityError if its tag fails under ``keys`` (edited, or another key's)."""
    where = repr(os.fspath(path))
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise NotFoundError(f"anchor file {where} does not exist") from None
    except (OSError, ValueError) as exc:
        raise StoreFormatError(f"cannot read anchor file {where}: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != ANCHOR_FORMAT:
        raise StoreFormatError(f"{where} is not an anchor ({ANCHOR_FORMAT!r})")
    body = {k: v for k, v in data.items() if k != "tag"}
    if keys is not None and not same_tag(data.get("tag"), _tag(keys, body)):
        raise IntegrityError(f"anchor file {where} fails its check (edited, or written under another key)")
    try:
        return Anchor(
            store_id=str(body["store_id"]),
            generation=int(body["generation"]),
            audit_seq=None if body.get("audit_seq") is None else int(body["audit_seq"]),
            audit_digest=None if body.get("audit_digest") is None else str(body["audit_digest"]),
        )
    except (KeyError, TypeError, ValueError):
        raise StoreFormatError(f"anchor file {where} is damaged: a field is missing or wrong") from None


def check_anchor(anchor: Anchor, *, store_id: str, generation: int) -> None:
    """IntegrityError if the memory (``store_id`` at ``generation``) is older than ``anchor`` or is
    another memory."""
    if anchor.store_id != store_id:
        raise IntegrityError(f"the anchor names memory {anchor.store_id}, not this one ({store_id})")
    if generation < anchor.generation:
        raise IntegrityError(
            f"the memory is at generation {generation}, older than its anchor (generation"
            f" {anchor.generation}): it was rolled back (a folder or database put back from an older copy)"
        )


def anchored(memory: M, anchor: str | os.PathLike[str] | None, keys: KeyRing | None) -> M:
    """``memory``, once it is shown to be no older than the anchor in the file ``anchor`` (None: no
    anchor to check); else it is closed and the error raised."""
    if anchor is None:
        return memory
    try:
        found = read_anchor(anchor, keys)
        check_anchor(found, store_id=memory.store_id, generation=memory.generation)
    except BaseException:
        memory.close()
        raise
    return memory
