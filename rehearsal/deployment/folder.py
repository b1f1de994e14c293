"""A deployment on disk: one folder with its config, its versions' weights, its memory and its suite.

::

    DIR/deployment.json         format, id (the deployment's identity), config (DeploymentConfig), tag
    DIR/memory/                 the replay memory (encrypted), its versions.json (sealed) and audit.log
    DIR/suite/                  the regression suite: held-out examples of every task (encrypted memory)
    DIR/weights/<update>/       a version's (or a candidate's) weights, its state.json and seal.json
    DIR/pending.json            a staged candidate awaiting ``rehearsal promote`` (at most one; keyed tag)

The deployed version is the memory's current version (``rehearsal.governance.versions``); its weights
folder's ``state.json`` (:class:`VersionState`) says which labels, tasks and experts it knows and what it
measured when it shipped. ``rehearsal rollback`` moves the pointer back; nothing here copies it.

Every file the deployment reads back is keyed with its master key and bound to its identity, a random id
``deployment.json`` carries under its tag: ``versions.json`` (each version record tagged over the
identity and its version number, the file over its records, the current version and the staged
candidate's marker; ``rehearsal.governance.versions``), every weights folder's ``seal.json``
(``rehearsal.deployment.seal``) and ``pending.json``. So a file copied from another deployment
under the same key disagrees with the rest of this one and is refused, and so is a ``pending.json``
deleted, or put back, behind the versions file's marker. Weights are stored relative to the deployment
and must be a folder of ``DIR/weights`` (no absolute path, no ``..``, no link out of it).

Deployments made before identities (format 2) are refused with the way out: ``rehearsal
migrate-deployment DIR`` (``rehearsal.deployment.migrate``) checks them under the old rules and
binds them once.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Any, Protocol

from rehearsal._files import write_json
from rehearsal.crypto.keys import KeyRing, keyed_tag, same_tag
from rehearsal.deployment.config import DeploymentConfig
from rehearsal.deployment.seal import config_tag, seal_weights, verify_weights
from rehearsal.deployment.staged import StagedCandidate
from rehearsal.errors import ConfigError, IntegrityError, NotFoundError, StoreFormatError
from rehearsal.governance.audit_log import AuditLog, default_log_path
from rehearsal.governance.versions import Version, VersionsFile, VersionsSeal, read_versions, set_staged
from rehearsal.memory.facade import RehearsalMemory

__all__ = [
    "DEPLOYMENT_FILE",
    "Deployment",
    "VersionState",
    "deployment_memory",
    "has_pending",
    "is_deployment",
]

DEPLOYMENT_FILE = "deployment.json"
FORMAT = "rehearsal-deployment/3"
UNBOUND_FORMAT = "rehearsal-deployment/2"  # before its files were bound to its identity
_UNSEALED_FORMAT = "rehearsal-deployment/1"  # before the config and the weights were sealed
_ID = re.compile(r"[0-9a-f]{32}")
_STATE = "state.json"
PENDING_FILE = "pending.json"
_PENDING_PURPOSE = "deployment-pending-tag"


def is_deployment(path: str | os.PathLike[str]) -> bool:
    return (Path(path) / DEPLOYMENT_FILE).is_file()


def deployment_memory(path: str | os.PathLike[str]) -> Path:
    """Where the deployment in ``path`` keeps its memory (where a run keeps its own)."""
    return Path(path) / "memory"


def has_pending(path: str | os.PathLike[str]) -> bool:
    """Whether the deployment in ``path`` has a staged candidate waiting for promote (unchecked: opening
    the deployment verifies the file)."""
    return (Path(path) / PENDING_FILE).is_file()


def read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotFoundError(f"{what} {str(path)!r} does not exist") from None
    except (OSError, ValueError) as exc:
        raise StoreFormatError(f"cannot read {what} {str(path)!r}: {exc}") from None


@dataclasses.dataclass
class VersionState:
    """What one version (or candidate) knows and measured. ``labels`` only ever grow along a lineage:
    a label's output of the head is its index here."""

    update: str
    labels: list[str]
    tasks: dict[str, list[str]]  # task -> its labels
    experts: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # expert adapter -> tasks
    suite_boundary: int = 0  # one past the largest suite id when it was made (rollback trims above it)
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    novelty: dict[str, Any] | None = None
    router: dict[str, Any] | None = None  # expert growth with router "probe": the fitted TaskProbe

    def label_ids(self, labels: list[str]) -> list[int]:
        return [self.labels.index(label) for label in labels]

    def save(self, folder: Path) -> None:
        write_json(folder / _STATE, dataclasses.asdict(self))

    @classmethod
    def load(cls, folder: Path) -> VersionState:
        data = read_json(folder / _STATE, "version state")
        if not isinstance(data, dict):
            raise StoreFormatError(f"{str(folder / _STATE)!r} is not a version state")
        return cls(**data)


class SavableModel(Protocol):
    """What a version's weights come from (``DeployedModel``, which imports this module, so it is named
    by what it does rather than imported)."""

    def save(self, folder: Path) -> None: ...


class Deployment:
    """The folder of a deployment (see the module docstring); :meth:`open` or :meth:`create` it."""

    def __init__(self, path: Path, config: DeploymentConfig, keys: KeyRing, identity: str) -> None:
        self.path = path
        self.config = config
        self.keys = keys
        self.id = identity  # random, made with the deployment; every file it reads back is bound to it

    def __repr__(self) -> str:
        return f"Deployment(path={str(self.path)!r}, strategy={self.config.strategy!r}, keys=<redacted>)"

    @classmethod
    def create(cls, path: str | os.PathLike[str], config: DeploymentConfig, keys: KeyRing) -> Deployment:
        folder = Path(path)
        if folder.exists() and any(folder.iterdir()):
            raise ConfigError(f"{str(folder)!r} exists and is not empty; a deployment needs a new folder")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "weights").mkdir()
        identity = secrets.token_hex(16)
        write_config(folder, config, keys, identity)
        return cls(folder, config, keys, identity)

    @classmethod
    def open(cls, path: str | os.PathLike[str], keys: KeyRing) -> Deployment:
        """The deployment in ``path``, once its config verifies under ``keys`` and its versions file is
        bound to the identity the config names (a ``deployment.json`` copied from another deployment
        under the same key is refused here)."""
        folder = Path(path)
        where = repr(str(folder / DEPLOYMENT_FILE))
        data = read_json(folder / DEPLOYMENT_FILE, "deployment file")
        fmt = data.get("format") if isinstance(data, dict) else None
        if fmt == _UNSEALED_FORMAT:
            raise StoreFormatError(
                f"{where} was made by an earlier rehearsal that did not seal its config and weights; "
                "make a new deployment (rehearsal init-deployment) from its memory"
            )
        if fmt == UNBOUND_FORMAT:
            raise StoreFormatError(
                f"{where} was made by an earlier rehearsal that did not bind its files to the deployment; "
                f"run 'rehearsal migrate-deployment {folder}' once (with its key) to check and bind them"
            )
        if not isinstance(data, dict) or fmt != FORMAT:
            raise StoreFormatError(f"{where} is not a deployment ({FORMAT!r})")
        check_config(data, keys, where)
        dep = cls(folder, DeploymentConfig.from_dict(data["config"]), keys, data["id"])
        dep.read_versions()
        return dep

    # -- parts ------------------------------------------------------------------------------------
    @property
    def memory_path(self) -> Path:
        return deployment_memory(self.path)

    @property
    def suite_path(self) -> Path:
        return self.path / "suite"

    def weights_dir(self, update: str, *, fresh: bool = False) -> Path:
        """Where ``update``'s weights live; ``fresh``: emptied first (a retrained update starts over)."""
        folder = self.path / "weights" / update.replace("/", "_")
        if fresh:
            shutil.rmtree(folder, ignore_errors=True)
        return folder

    # Each memory opens with the encoder it recorded (the packaged MiniLM in its arithmetic: fp32, or bf16
    # for a memory a run made with encoder_backend "bf16"/"auto").
    def open_memory(self, *, read_only: bool = False) -> RehearsalMemory:
        return RehearsalMemory.open(self.memory_path, keys=self.keys, read_only=read_only)

    def open_suite(self, *, read_only: bool = False) -> RehearsalMemory:
        return RehearsalMemory.open(self.suite_path, keys=self.keys, read_only=read_only)

    def log(self) -> AuditLog:
        return AuditLog.open(default_log_path(self.memory_path), self.keys)

    def save_version(self, model: SavableModel, folder: Path) -> None:
        """Write ``model`` (weights and state) into the new ``folder`` and seal it."""
        model.save(folder)
        seal_weights(folder, self.keys, deployment=self.id)

    def load_state(self, folder: Path) -> VersionState:
        """The state of the weights folder ``folder``, once it is shown to be one of this deployment's
        weights folders and its seal shows nothing in it changed."""
        folder = self.inside_weights(folder)
        verify_weights(folder, self.keys, deployment=self.id)
        return VersionState.load(folder)

    def inside_weights(self, folder: str | os.PathLike[str]) -> Path:
        """``folder`` (absolute, or relative to the deployment) resolved, if it is a folder directly in
        ``DIR/weights``; IntegrityError otherwise (a path out of the deployment, or into another)."""
        given = Path(folder)
        resolved = (given if given.is_absolute() else self.path / given).resolve()
        if resolved.parent != (self.path / "weights").resolve():
            raise IntegrityError(
                f"weights {str(folder)!r} are not a folder of {str(self.path / 'weights')!r}: refused"
            )
        return resolved

    # -- versions ---------------------------------------------------------------------------------
    @property
    def versions_seal(self) -> VersionsSeal:
        return VersionsSeal(self.keys, f"deployment:{self.id}")

    def read_versions(self) -> VersionsFile:
        """The versions file, checked: sealed under the key and bound to this deployment."""
        return read_versions(self.memory_path, seal=self.versions_seal)

    def versions(self) -> tuple[list[Version], int | None]:
        found = self.read_versions()
        return found.versions, found.current

    def current(self) -> tuple[Version, VersionState]:
        """The deployed version and its state."""
        versions, current = self.versions()
        found = [v for v in versions if v.version == current and not v.withdrawn]
        if not found:
            raise NotFoundError(f"deployment {str(self.path)!r} has no current version")
        return found[0], self.load_state(Path(found[0].weights))

    def own_versions(self) -> list[Version]:
        """Every live (not withdrawn) version, oldest first."""
        versions, _ = self.versions()
        return [v for v in versions if not v.withdrawn]

    def states(self) -> list[tuple[Version, VersionState]]:
        """Every live version with its state (each folder's seal checked), oldest first."""
        return [(v, self.load_state(Path(v.weights))) for v in self.own_versions()]

    # -- the staged candidate -----------------------------------------------------------------------
    # promote ships what this file says the staging measured, so it carries a keyed tag bound to the
    # deployment: an edited per-example result or gate preview is refused, not promoted. The versions
    # file keeps a marker of it (its update and tag), so a deleted pending.json, or an older one put
    # back, is refused too rather than read as "nothing staged".
    def pending(self) -> StagedCandidate | None:
        path = self.path / PENDING_FILE
        marker = self.read_versions().staged
        if not path.is_file():
            if marker is not None:
                raise IntegrityError(
                    f"candidate {marker.get('update')!r} is staged, but {str(path)!r} is missing (deleted): "
                    "roll back to discard it"
                )
            return None
        parts = sealed_pending(path)
        if parts is None:
            raise IntegrityError(f"staged candidate {str(path)!r} is not sealed by this deployment")
        body, tag = parts
        if not same_tag(tag, pending_tag(self.keys, self.id, body)):
            raise IntegrityError(
                f"staged candidate {str(path)!r} fails its check (edited, sealed with another key, or "
                "another deployment's): roll back to discard it"
            )
        if marker is None or not same_tag(marker.get("tag"), tag):
            raise IntegrityError(
                f"staged candidate {str(path)!r} is not the one this deployment's versions file names "
                "(an older copy put back, or a write cut short): roll back to discard it"
            )
        return StagedCandidate.from_dict(body)

    def set_pending(self, pending: StagedCandidate | None) -> None:
        path = self.path / PENDING_FILE
        if pending is None:
            set_staged(self.memory_path, None, seal=self.versions_seal)
            path.unlink(missing_ok=True)
        else:
            body = pending.to_dict()
            tag = pending_tag(self.keys, self.id, body)
            write_json(path, {"pending": body, "tag": tag})
            set_staged(self.memory_path, {"update": pending.update, "tag": tag}, seal=self.versions_seal)

    def candidate_weights(self, pending: StagedCandidate) -> Path:
        """The staged candidate's weights folder (stored relative to the deployment)."""
        return self.inside_weights(pending.weights)


def sealed_pending(path: Path) -> tuple[dict[str, Any], str] | None:
    """(body, tag) of a ``pending.json`` in its sealed shape, or None when it has another shape."""
    data = read_json(path, "staged candidate")
    body = data.get("pending") if isinstance(data, dict) else None
    tag = data.get("tag") if isinstance(data, dict) else None
    if not isinstance(body, dict) or not isinstance(tag, str):
        return None
    return body, tag


def pending_tag(keys: KeyRing, identity: str | None, body: dict[str, Any]) -> str:
    """The tag ``pending.json`` carries: over the deployment's identity and ``body`` (None: the tag of a
    format-2 deployment, which named no identity; only migration reads it)."""
    payload = body if identity is None else {"deployment": identity, "pending": body}
    return keyed_tag(keys, _PENDING_PURPOSE, payload)


def write_config(folder: Path, config: DeploymentConfig, keys: KeyRing, identity: str) -> None:
    """Write ``deployment.json``: the config and the identity, under a tag over both."""
    body = {"format": FORMAT, "id": identity, "config": config.to_dict()}
    write_json(folder / DEPLOYMENT_FILE, {**body, "tag": config_tag(keys, body)})


def check_config(data: dict[str, Any], keys: KeyRing, where: str) -> None:
    """IntegrityError unless ``data`` (a read ``deployment.json``) carries the tag of its content under
    ``keys`` and a well-formed identity."""
    body = {k: v for k, v in data.items() if k != "tag"}
    tag = data.get("tag")
    if not same_tag(tag, config_tag(keys, body)):
        raise IntegrityError(f"{where} fails its check (edited, or sealed with another key)")
    if data.get("format") == FORMAT and not (isinstance(data.get("id"), str) and _ID.fullmatch(data["id"])):
        raise IntegrityError(f"{where} has no identity this rehearsal reads")
