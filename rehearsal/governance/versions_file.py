"""The versions file of a memory, ``<memory>/versions.json``: its records, read and written atomically,
plain or sealed (see :mod:`rehearsal.governance.versions` for what a version is and how rollback uses it).

It comes in two forms:

- plain (a run's memory): ``{"current", "versions"}``, weights relative to the memory folder (older
  records hold absolute paths); nothing authenticates it;
- sealed (a deployment's memory; :class:`VersionsSeal`): format ``rehearsal-versions/2``, bound to its
  owner (``binding``, the deployment's identity), each record tagged over its owner and its version
  number, and the whole file (records, ``current`` and the staged-candidate marker ``staged``) tagged
  under a key derived from the master key. Weights are stored relative to the folder above the memory
  (the deployment) and refused if they leave it. A sealed file is never read or written as a plain one.

Every stored record is checked for its fields and their types before it becomes a :class:`Version`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from rehearsal._files import atomic_write
from rehearsal.crypto.keys import same_tag
from rehearsal.errors import IntegrityError, StoreFormatError, ValidationError
from rehearsal.governance.audit_log import canonical_json

if TYPE_CHECKING:
    from rehearsal.crypto.keys import KeyRing

__all__ = [
    "VERSIONS_FILE",
    "Version",
    "VersionsFile",
    "VersionsSeal",
    "is_sealed",
    "list_versions",
    "load_for_change",
    "read_versions",
    "save_versions",
    "set_staged",
    "start_sealed",
    "stored_version",
    "stored_weights",
    "typed_record",
    "write_sealed",
]

VERSIONS_FILE = "versions.json"
_SEALED_FORMAT = "rehearsal-versions/2"
_FILE_PURPOSE = "versions-file-tag"
_RECORD_PURPOSE = "versions-record-tag"


@dataclasses.dataclass(frozen=True)
class Version:
    version: int
    created_at: float
    weights: str
    config_hash: str
    generation: int
    id_boundary: int
    entries: int
    ids_hash: str
    update: str | None = None  # the run update that produced it (rehearsal.governance.updates.update_id)
    withdrawn: bool = False  # recorded, but the run that recorded it never acknowledged it (a crash)


# Each stored field and the types it may hold (bool is an int to Python: told apart below).
_FIELDS: dict[str, tuple[type, ...]] = {
    "version": (int,),
    "created_at": (int, float),
    "weights": (str,),
    "config_hash": (str,),
    "generation": (int,),
    "id_boundary": (int,),
    "entries": (int,),
    "ids_hash": (str,),
    "update": (str, type(None)),
    "withdrawn": (bool,),
}
_COUNTS = ("version", "generation", "id_boundary", "entries")  # whole numbers, versions from 1
_OPTIONAL: dict[str, Any] = {"update": None, "withdrawn": False}


@dataclasses.dataclass(frozen=True)
class VersionsSeal:
    """How a sealed versions file is keyed (``keys``) and whose it is (``binding``: its owner's identity,
    e.g. ``deployment:<id>``). ``binding`` None accepts any owner's file the key authenticates (for
    listing a memory's versions without knowing its owner); it cannot write."""

    keys: KeyRing
    binding: str | None

    def __repr__(self) -> str:
        return f"VersionsSeal(binding={self.binding!r}, keys=<redacted>)"


@dataclasses.dataclass(frozen=True)
class VersionsFile:
    """What a versions file holds: its versions (oldest first), the current one's number, and (sealed
    files only) the marker of a staged candidate (``{"update", "tag"}``) or None."""

    versions: list[Version]
    current: int | None
    staged: dict[str, Any] | None = None


# -- reading and writing ------------------------------------------------------------------------------


def _tag(keys: KeyRing, purpose: str, body: Any) -> str:
    try:
        canonical = canonical_json(body)
    except ValueError:  # NaN or infinity, which JSON reads but no tag was ever made over
        raise IntegrityError("a versions file holds a number no tag covers (NaN or infinity)") from None
    return hmac.new(keys.derive_key(purpose), canonical, hashlib.sha256).hexdigest()


def _record_tag(keys: KeyRing, binding: str, record: Mapping[str, Any]) -> str:
    """A record's tag: over its owner and every field, its version number included, so a record cannot
    be edited, renumbered or carried into another deployment's file."""
    body = {k: v for k, v in record.items() if k != "tag"}
    return _tag(keys, _RECORD_PURPOSE, {"binding": binding, "version": body.get("version"), "record": body})


def _where(folder: Path) -> str:
    return repr(str(folder / VERSIONS_FILE))


def _raw(folder: Path) -> dict[str, Any] | None:
    path = folder / VERSIONS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise StoreFormatError(f"cannot read {_where(folder)}: {exc}") from None
    try:
        data = json.loads(text)
    except ValueError:
        raise StoreFormatError(f"{_where(folder)} is not valid JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("versions"), list):
        raise StoreFormatError(f"{_where(folder)} has no 'versions' list")
    return data


def _load(folder: Path, seal: VersionsSeal | None, *, writing: bool = False) -> dict[str, Any]:
    """The file's content, checked: a sealed file against ``seal`` (its tag, its owner, each record's
    tag), a plain one only for its shape. A sealed file needs a seal; with a seal, a plain file (or none,
    when ``writing`` is False) is refused: an owner that seals never leaves an unsealed file."""
    data = _raw(folder)
    if data is None:
        if seal is not None and seal.binding is not None and not writing:
            raise IntegrityError(f"{_where(folder)} is missing (deleted, or never written)")
        return {"current": None, "versions": [], **({"format": _SEALED_FORMAT} if seal else {})}
    fmt = data.get("format")
    if fmt is None:
        if seal is not None:
            raise IntegrityError(
                f"{_where(folder)} is not sealed, but its owner seals it (replaced by an unsealed copy)"
            )
        return data
    if fmt != _SEALED_FORMAT:
        raise StoreFormatError(f"{_where(folder)} has format {fmt!r}, which this rehearsal does not read")
    if seal is None:
        raise ValidationError(
            f"{_where(folder)} is sealed by a deployment: read and change it through the deployment "
            "(its key and folder)"
        )
    if writing and seal.binding is None:
        raise ValidationError("a versions file is written only with its owner's binding")
    tag = data.get("tag")
    body = {k: v for k, v in data.items() if k != "tag"}
    if not same_tag(tag, _tag(seal.keys, _FILE_PURPOSE, body)):
        raise IntegrityError(f"{_where(folder)} fails its check (edited, or sealed with another key)")
    binding = data.get("binding")
    if not isinstance(binding, str) or (seal.binding is not None and binding != seal.binding):
        raise IntegrityError(f"{_where(folder)} belongs to {binding!r}, not to {seal.binding!r}")
    numbers = []
    for record in data["versions"]:
        if not isinstance(record, dict) or not same_tag(
            record.get("tag"), _record_tag(seal.keys, binding, record)
        ):
            raise IntegrityError(f"a version record in {_where(folder)} fails its check")
        numbers.append(record.get("version"))
    ints = [n for n in numbers if isinstance(n, int) and not isinstance(n, bool)]
    if len(ints) == len(numbers) and ints != sorted(set(ints)):
        raise IntegrityError(f"the version numbers in {_where(folder)} are not increasing: {numbers}")
    return data


def save_versions(folder: Path, data: Mapping[str, Any], seal: VersionsSeal | None) -> None:
    if seal is None:
        out = {k: v for k, v in data.items() if k in ("current", "versions")}
    else:
        if seal.binding is None:
            raise ValidationError("a versions file is written only with its owner's binding")
        records = []
        for record in data["versions"]:
            plain = {k: v for k, v in record.items() if k != "tag"}
            records.append({**plain, "tag": _record_tag(seal.keys, seal.binding, plain)})
        body = {
            "format": _SEALED_FORMAT,
            "binding": seal.binding,
            "current": data.get("current"),
            "versions": records,
            "staged": data.get("staged"),
        }
        out = {**body, "tag": _tag(seal.keys, _FILE_PURPOSE, body)}
    atomic_write(folder / VERSIONS_FILE, (json.dumps(out, indent=2, sort_keys=True) + "\n").encode())


def typed_record(folder: Path, raw: object) -> dict[str, Any]:
    """A stored record with every field of :class:`Version` of its type; StoreFormatError names the
    record and the field otherwise (a record missing ``id_boundary`` must not reach a rollback)."""
    number = raw.get("version") if isinstance(raw, dict) else None
    what = f"version record {number!r} in {_where(folder)}"
    if not isinstance(raw, dict):
        raise StoreFormatError(f"a version record in {_where(folder)} is not an object")
    unknown = sorted(set(raw) - set(_FIELDS) - {"tag"})
    if unknown:
        raise StoreFormatError(f"{what} has unknown fields: {unknown}")
    out: dict[str, Any] = {}
    for name, kinds in _FIELDS.items():
        if name not in raw and name in _OPTIONAL:
            out[name] = _OPTIONAL[name]
            continue
        if name not in raw:
            raise StoreFormatError(f"{what} lacks {name!r}")
        value: Any = raw[name]
        bad_bool = isinstance(value, bool) and bool not in kinds
        if bad_bool or not isinstance(value, kinds):
            raise StoreFormatError(f"{what} has {name!r} of type {type(value).__name__}")
        if isinstance(value, float) and not math.isfinite(value):
            raise StoreFormatError(f"{what} has a {name!r} that is not finite")
        least = 1 if name == "version" else 0
        if isinstance(value, int) and name in _COUNTS and value < least:
            raise StoreFormatError(f"{what} has {name!r} {value}, below its least value")
        out[name] = value
    return out


def _root(folder: Path) -> Path:
    """The folder a sealed file's weights are relative to: the one above the memory (a deployment)."""
    return folder.resolve().parent


def stored_weights(folder: Path, weights: str, sealed: bool) -> str:
    """How a record stores ``weights``: relative to the memory folder (plain), or to the folder above it,
    which it may not leave (sealed)."""
    if not sealed:
        # Relative to the memory folder, so a run folder that moves (memory and weights together) can
        # still roll back; Version objects always carry the resolved path.
        return os.path.relpath(Path(weights).resolve(), folder.resolve())
    root = _root(folder)
    resolved = Path(weights).resolve()
    if not resolved.is_relative_to(root) or resolved == root:
        raise ValidationError(f"weights {weights!r} are outside {str(root)!r}, which holds the memory")
    return resolved.relative_to(root).as_posix()


def _weights_path(folder: Path, stored: str, sealed: bool) -> str:
    if not sealed:
        weights = Path(stored)
        return str(weights if weights.is_absolute() else (folder.resolve() / weights).resolve())
    root = _root(folder)
    posix = PurePosixPath(stored)
    if not stored or posix.is_absolute() or ".." in posix.parts or "\\" in stored:
        raise IntegrityError(f"{_where(folder)} holds weights {stored!r} outside {str(root)!r}")
    resolved = (root / posix).resolve()  # a symlink swapped in is followed, then refused below
    if not resolved.is_relative_to(root) or resolved == root:
        raise IntegrityError(f"weights {stored!r} in {_where(folder)} resolve outside {str(root)!r}")
    return str(resolved)


def stored_version(folder: Path, raw: object, sealed: bool) -> Version:
    """A stored version, typed, with its weights path made absolute."""
    record = typed_record(folder, raw)
    return Version(**{**record, "weights": _weights_path(folder, record["weights"], sealed)})


def read_versions(memory_path: str | Path, *, seal: VersionsSeal | None = None) -> VersionsFile:
    """The recorded versions (checked against ``seal`` when the file is sealed; see :func:`_load`)."""
    folder = Path(memory_path)
    data = _load(folder, seal)
    sealed = data.get("format") == _SEALED_FORMAT
    versions = [stored_version(folder, v, sealed) for v in data["versions"]]
    current = data.get("current")
    if current is not None and (isinstance(current, bool) or not isinstance(current, int)):
        raise StoreFormatError(f"{_where(folder)} has a 'current' that is not a version number")
    staged = data.get("staged")
    return VersionsFile(versions, current, dict(staged) if isinstance(staged, dict) else None)


def list_versions(
    memory_path: str | Path, *, seal: VersionsSeal | None = None
) -> tuple[list[Version], int | None]:
    """The recorded versions, oldest first, and the current one's number (None before any)."""
    found = read_versions(memory_path, seal=seal)
    return found.versions, found.current


def start_sealed(memory_path: str | Path, seal: VersionsSeal) -> None:
    """Begin a sealed versions file with no version (a new deployment; what its source memory recorded
    names weights the deployment does not have)."""
    save_versions(Path(memory_path), {"current": None, "versions": [], "staged": None}, seal)


def is_sealed(memory_path: str | Path) -> bool:
    """Whether the memory's versions file is a sealed one (False when it is plain or absent)."""
    data = _raw(Path(memory_path))
    return data is not None and data.get("format") == _SEALED_FORMAT


def write_sealed(
    memory_path: str | Path,
    seal: VersionsSeal,
    versions: list[Version],
    current: int | None,
    staged: Mapping[str, Any] | None = None,
) -> None:
    """Write ``versions`` (weights absolute, as read) as the sealed versions file of ``seal``'s owner:
    how a plain file is sealed once its records have been checked (a deployment's migration)."""
    folder = Path(memory_path)
    records = [
        {**dataclasses.asdict(v), "weights": stored_weights(folder, v.weights, True)} for v in versions
    ]
    save_versions(folder, {"current": current, "versions": records, "staged": staged}, seal)


def set_staged(memory_path: str | Path, staged: Mapping[str, Any] | None, *, seal: VersionsSeal) -> None:
    """Record (or clear, with None) the marker of a staged candidate in a sealed versions file."""
    folder = Path(memory_path)
    data = _load(folder, seal)
    save_versions(folder, {**data, "staged": None if staged is None else dict(staged)}, seal)


def load_for_change(folder: Path, seal: VersionsSeal | None) -> tuple[dict[str, Any], VersionsSeal | None]:
    """The file's content for a change, and the seal it is written back with (None: plain)."""
    data = _load(folder, seal, writing=True)
    return data, seal if data.get("format") == _SEALED_FORMAT else None
