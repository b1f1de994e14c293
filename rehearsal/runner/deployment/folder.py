"""A deployment on disk: one folder with its config, its versions' weights, its memory and its suite.

::

    DIR/deployment.json         format, config (rehearsal.runner.deployment.config.DeploymentConfig), tag
    DIR/memory/                 the replay memory (encrypted), its versions.json and audit.log
    DIR/suite/                  the regression suite: held-out examples of every task (encrypted memory)
    DIR/weights/<update>/       a version's (or a candidate's) weights, its state.json and seal.json
    DIR/pending.json            a staged candidate awaiting ``rehearsal promote`` (at most one; keyed tag)

The deployed version is the memory's current version (``rehearsal.governance.versions``); its weights
folder's ``state.json`` (:class:`VersionState`) says which labels, tasks and experts it knows and what it
measured when it shipped. ``rehearsal rollback`` moves the pointer back; nothing here copies it.
``deployment.json`` and every weights folder are sealed with the deployment's key
(``rehearsal.runner.deployment.seal``) and checked before they are used.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import Any, Protocol

from rehearsal._files import atomic_write
from rehearsal.crypto.keys import KeyRing
from rehearsal.errors import ConfigError, IntegrityError, NotFoundError, StoreFormatError
from rehearsal.governance.audit_log import AuditLog, default_log_path
from rehearsal.governance.versions import Version, list_versions
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.runner.deployment.config import DeploymentConfig
from rehearsal.runner.deployment.seal import config_tag, seal_weights, verify_weights

__all__ = ["DEPLOYMENT_FILE", "Deployment", "VersionState", "is_deployment"]

DEPLOYMENT_FILE = "deployment.json"
_FORMAT = "rehearsal-deployment/2"
_UNSEALED_FORMAT = "rehearsal-deployment/1"  # before the config and the weights were sealed
_STATE = "state.json"
_PENDING = "pending.json"
_PENDING_PURPOSE = "deployment-pending-tag"


def is_deployment(path: str | os.PathLike[str]) -> bool:
    return (Path(path) / DEPLOYMENT_FILE).is_file()


def _write_json(path: Path, data: Any) -> None:
    atomic_write(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def _read_json(path: Path, what: str) -> Any:
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

    def expert_of(self, task: str) -> str | None:
        return next((name for name, tasks in self.experts.items() if task in tasks), None)

    def save(self, folder: Path) -> None:
        _write_json(folder / _STATE, dataclasses.asdict(self))

    @classmethod
    def load(cls, folder: Path) -> VersionState:
        data = _read_json(folder / _STATE, "version state")
        if not isinstance(data, dict):
            raise StoreFormatError(f"{str(folder / _STATE)!r} is not a version state")
        return cls(**data)


class SavableModel(Protocol):
    """What a version's weights come from (``DeployedModel``, which imports this module, so it is named
    by what it does rather than imported)."""

    def save(self, folder: Path) -> None: ...


class Deployment:
    """The folder of a deployment (see the module docstring); :meth:`open` or :meth:`create` it."""

    def __init__(self, path: Path, config: DeploymentConfig, keys: KeyRing) -> None:
        self.path = path
        self.config = config
        self.keys = keys

    def __repr__(self) -> str:
        return f"Deployment(path={str(self.path)!r}, strategy={self.config.strategy!r}, keys=<redacted>)"

    @classmethod
    def create(cls, path: str | os.PathLike[str], config: DeploymentConfig, keys: KeyRing) -> Deployment:
        folder = Path(path)
        if folder.exists() and any(folder.iterdir()):
            raise ConfigError(f"{str(folder)!r} exists and is not empty; a deployment needs a new folder")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "weights").mkdir()
        body = {"format": _FORMAT, "config": config.to_dict()}
        _write_json(folder / DEPLOYMENT_FILE, {**body, "tag": config_tag(keys, body)})
        return cls(folder, config, keys)

    @classmethod
    def open(cls, path: str | os.PathLike[str], keys: KeyRing) -> Deployment:
        folder = Path(path)
        where = repr(str(folder / DEPLOYMENT_FILE))
        data = _read_json(folder / DEPLOYMENT_FILE, "deployment file")
        if isinstance(data, dict) and data.get("format") == _UNSEALED_FORMAT:
            raise StoreFormatError(
                f"{where} was made by an earlier rehearsal that did not seal its config and weights; "
                "make a new deployment (rehearsal init-deployment) from its memory"
            )
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise StoreFormatError(f"{where} is not a deployment ({_FORMAT!r})")
        body = {k: v for k, v in data.items() if k != "tag"}
        tag = data.get("tag")
        if not isinstance(tag, str) or not hmac.compare_digest(tag, config_tag(keys, body)):
            raise IntegrityError(f"{where} fails its check (edited, or sealed with another key)")
        return cls(folder, DeploymentConfig.from_dict(data["config"]), keys)

    # -- parts ------------------------------------------------------------------------------------
    @property
    def memory_path(self) -> Path:
        return self.path / "memory"

    @property
    def suite_path(self) -> Path:
        return self.path / "suite"

    def weights_dir(self, update: str) -> Path:
        return self.path / "weights" / update.replace("/", "_")

    def open_memory(self, *, read_only: bool = False) -> RehearsalMemory:
        from rehearsal.embedding import load_encoder

        return RehearsalMemory.open(
            self.memory_path, keys=self.keys, read_only=read_only, encoder=load_encoder()
        )

    def open_suite(self, *, read_only: bool = False) -> RehearsalMemory:
        from rehearsal.embedding import load_encoder

        return RehearsalMemory.open(
            self.suite_path, keys=self.keys, read_only=read_only, encoder=load_encoder()
        )

    def log(self) -> AuditLog:
        return AuditLog.open(default_log_path(self.memory_path), self.keys)

    def save_version(self, model: SavableModel, folder: Path) -> None:
        """Write ``model`` (weights and state) into the new ``folder`` and seal it."""
        model.save(folder)
        seal_weights(folder, self.keys)

    def load_state(self, folder: Path) -> VersionState:
        """The state of the weights folder ``folder``, once its seal shows nothing in it changed."""
        verify_weights(folder, self.keys)
        return VersionState.load(folder)

    # -- versions ---------------------------------------------------------------------------------
    def versions(self) -> tuple[list[Version], int | None]:
        return list_versions(self.memory_path)

    def current(self) -> tuple[Version, VersionState]:
        """The deployed version and its state."""
        versions, current = self.versions()
        found = [v for v in versions if v.version == current]
        if not found:
            raise NotFoundError(f"deployment {str(self.path)!r} has no current version")
        return found[0], self.load_state(Path(found[0].weights))

    def own_versions(self) -> list[Version]:
        """Every live (not withdrawn) version this deployment made, oldest first."""
        versions, _ = self.versions()
        # Versions a source run recorded before the deployment was made have no state: not its own.
        return [v for v in versions if not v.withdrawn and (Path(v.weights) / _STATE).is_file()]

    def states(self) -> list[tuple[Version, VersionState]]:
        """Every live version with its state (each folder's seal checked), oldest first."""
        return [(v, self.load_state(Path(v.weights))) for v in self.own_versions()]

    # -- the staged candidate -----------------------------------------------------------------------
    # promote ships what this file says the staging measured, so it carries a keyed tag: an edited
    # per-example result or gate preview is refused, not promoted.
    def pending(self) -> dict[str, Any] | None:
        path = self.path / _PENDING
        if not path.is_file():
            return None
        data = _read_json(path, "staged candidate")
        body = data.get("pending") if isinstance(data, dict) else None
        tag = data.get("tag") if isinstance(data, dict) else None
        if not isinstance(body, dict) or not isinstance(tag, str):
            raise IntegrityError(f"staged candidate {str(path)!r} is not sealed by this deployment")
        if not hmac.compare_digest(tag, self._pending_tag(body)):
            raise IntegrityError(
                f"staged candidate {str(path)!r} fails its check (edited, or sealed with another key): "
                "roll back to discard it"
            )
        return dict(body)

    def set_pending(self, pending: dict[str, Any] | None) -> None:
        path = self.path / _PENDING
        if pending is None:
            path.unlink(missing_ok=True)
        else:
            _write_json(path, {"pending": pending, "tag": self._pending_tag(pending)})

    def _pending_tag(self, body: dict[str, Any]) -> str:
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        key = self.keys.derive_key(_PENDING_PURPOSE)
        return hmac.new(key, canonical, hashlib.sha256).hexdigest()
