"""Configuration dataclasses: each validates itself in ``__post_init__`` and round-trips through JSON."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from rehearsal._files import write_json
from rehearsal.errors import ConfigError

__all__ = [
    "ADAPTER_ROUTERS",
    "CALIBRATIONS",
    "COVERAGE_QUOTAS",
    "FISHER_MODES",
    "LOSSES",
    "MAX_SEED",
    "MIR_SCOPES",
    "PREDICTOR_NAMES",
    "REPLAY_GROUPS",
    "REPLAY_MODES",
    "ConfigMixin",
    "EWCConfig",
    "LoRAConfig",
    "ReplayConfig",
    "check_seed",
]

C = TypeVar("C", bound="ConfigMixin")

# Each name is one class in rehearsal.replay.modes (its register_mode refuses any other name; a test holds the
# registry to this list, which stays here because configs import no folder). "generative" replays examples a
# generator wrote (rehearsal.replay.generative), not entries of the memory.
REPLAY_MODES = ("retrieval", "random", "hybrid", "mir", "coverage", "diverse", "generative")
REPLAY_GROUPS = ("task", "label")
COVERAGE_QUOTAS = ("none", "distance", "similarity")
MIR_SCOPES = ("trainable", "head")
FISHER_MODES = ("sampled", "empirical")
# How lora-routed picks an input's adapter (a deployment's experts are routed by EXPERT_ROUTERS).
ADAPTER_ROUTERS = ("gate", "knn")
# Losses of RehearsalTrainer (rehearsal.replay.trainer implements them).
LOSSES = ("ce", "asymmetric", "separated")
# Corrections of the shared head after each phase (rehearsal.methods.calibration implements them).
CALIBRATIONS = ("none", "weight_aligning", "bias_correction")
# How a fine-tuned classifier predicts (rehearsal.methods.predictors registers one class per name and
# refuses any other): its own head, or a predictor fitted on the memory's examples after each phase.
PREDICTOR_NAMES = ("head", "ncm", "knn", "lda", "local")


class ConfigMixin:
    """to_dict / from_dict / save / load for a dataclass config; unknown keys are an error, not ignored."""

    __dataclass_fields__: ClassVar[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload,unused-ignore]

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.__name__} expects a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type,unused-ignore]
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown {cls.__name__} field(s) {unknown}; known: {sorted(known)}")
        return cls(**data)

    def save(self, path: str | os.PathLike[str]) -> None:
        write_json(Path(path), self.to_dict())

    @classmethod
    def load(cls: type[C], path: str | os.PathLike[str]) -> C:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read {cls.__name__} from {str(path)!r}: {exc}") from exc
        return cls.from_dict(data)


# numpy's legacy seeding, which transformers' set_seed calls, takes no larger seed: a config must refuse
# one before a run starts rather than fail in numpy halfway through it.
MAX_SEED = 2**32 - 1


def check_seed(value: object, name: str = "seed") -> None:
    """ConfigError unless ``value`` is an int seed in [0, MAX_SEED]."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        shown = f"{value!r}" if len(repr(value)) <= 40 else f"{repr(value)[:40]}..."
        raise ConfigError(f"{name!r} must be an int in [0, 2**32 - 1], got {shown}")


def _check_int(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name!r} must be an int >= {minimum}, got {value!r}")


def _check_fraction(name: str, value: object, *, upper_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        ok = 0.0 <= float(value) < 1.0 if upper_open else 0.0 <= float(value) <= 1.0  # type: ignore[arg-type]
    if not ok:
        bounds = "[0, 1)" if upper_open else "[0, 1]"
        raise ConfigError(f"{name!r} must be in {bounds}, got {value!r}")


@dataclasses.dataclass
class ReplayConfig(ConfigMixin):
    """How much replay each batch gets and how it is chosen.

    ``ratio`` is the replay share of each training batch: a batch of ``b`` new examples is topped up with
    ``round(b * ratio / (1 - ratio))`` old ones (0.25 with b=24 gives 8, i.e. 8 of 32; the default 0.5
    replays as many old examples as there are new ones).
    The defaults, class-balanced ``random`` replay at ratio 0.5, are the measured best so far: no selection
    mode beat them on either bundled stream (benchmarks/RESULTS.md, "Replay selection in the sparse
    regime"); ``configs/default.toml`` and the README's Trainer section use the same.
    ``mark_replay`` adds an ``is_replay`` column that a plain model does not accept: use it only with
    ``rehearsal.replay.trainer.RehearsalTrainer``, which removes it before the forward pass.
    In ``hybrid`` mode ``random_share`` of the replay is drawn at random (``balance="class"``: class by class)
    from the whole eligible memory so that old tasks far from the new data are not starved, and the rest
    are the nearest neighbours of the batch (``k`` per new example, merged and de-duplicated).

    The modes of ``rehearsal.replay.modes`` (``group_by`` names what "a class" is for them: ``"label"`` or
    ``"task"``):

    - ``mir`` (maximally interfered retrieval): the collator draws a pool of ``pool_size(count)``
      candidates (the batch's nearest neighbours spread over the old groups, plus a ``random_share``
      class-balanced random fill); ``RehearsalTrainer`` takes one virtual SGD step on the new rows and
      trains on the ``count`` candidates whose loss rises most. ``pool_factor`` must exceed 1: a pool
      no bigger than the replay count would replay all of it, i.e. random replay. ``mir_scope`` is what
      the virtual step moves: ``"trainable"`` (every trainable parameter: the paper's MIR) or ``"head"``
      (the classification head only, on features from one no-grad forward: far cheaper).
    - ``coverage``: ``coverage_share`` of the replay is a floor that visits the old groups round-robin
      (every group within ``ceil(groups / floor slots)`` batches); the rest are nearest neighbours, by
      per-task quotas when ``coverage_quotas`` is ``"distance"`` (more for the tasks farthest from the
      batch, as InsCL does) or ``"similarity"`` (more for the nearest).
    - ``diverse``: the union of every new example's ``k`` nearest neighbours, subsampled at random
      (CMR's indexed replay).
    - ``generative``: the replay share is filled with examples of old classes that a generator wrote
      (``rehearsal.replay.generative.GenerativeCollator``; the memory is not searched).
    """

    ratio: float = 0.5
    k: int = 4
    mode: str = "random"
    random_share: float = 0.5
    balance: str = "class"
    max_replay_examples: int | None = None
    max_replay_tokens: int | None = None
    max_length: int = 128
    seed: int = 0
    vector_column: str = "embedding"
    text_column: str = "text"
    label_column: str = "labels"
    search_threads: int = 1  # FAISS threads for a replay search (restored afterwards: torch shares them)
    mark_replay: bool = False  # add an "is_replay" 0/1 feature per row, for losses that treat replay apart
    pool_factor: float = 5.0  # mir: candidates drawn per replay slot (the MIR paper's range is 4-8x)
    group_by: str = "label"  # mir / coverage: the old groups the pool spreads over and the floor visits
    coverage_share: float = 0.5  # coverage: share of the replay spent on the round-robin floor
    coverage_quotas: str = "none"  # coverage: per-task quotas for the nearest-neighbour share
    mir_scope: str = "trainable"  # mir: the parameters the virtual step moves ("trainable" or "head")

    def __post_init__(self) -> None:
        _check_fraction("ratio", self.ratio, upper_open=True)
        _check_fraction("random_share", self.random_share)
        _check_int("k", self.k, minimum=1)
        _check_int("max_length", self.max_length, minimum=1)
        check_seed(self.seed)
        _check_int("search_threads", self.search_threads, minimum=1)
        if self.mode not in REPLAY_MODES:
            raise ConfigError(f"'mode' must be one of {list(REPLAY_MODES)}, got {self.mode!r}")
        pool = self.pool_factor
        if isinstance(pool, bool) or not isinstance(pool, (int, float)) or not 1.0 < pool < float("inf"):
            raise ConfigError(
                f"'pool_factor' must be a number > 1 (a pool no bigger than the replay count makes MIR "
                f"random replay), got {pool!r}"
            )
        _check_fraction("coverage_share", self.coverage_share)
        if self.group_by not in REPLAY_GROUPS:
            raise ConfigError(f"'group_by' must be one of {list(REPLAY_GROUPS)}, got {self.group_by!r}")
        if self.coverage_quotas not in COVERAGE_QUOTAS:
            raise ConfigError(
                f"'coverage_quotas' must be one of {list(COVERAGE_QUOTAS)}, got {self.coverage_quotas!r}"
            )
        if self.mir_scope not in MIR_SCOPES:
            raise ConfigError(f"'mir_scope' must be one of {list(MIR_SCOPES)}, got {self.mir_scope!r}")
        if self.balance not in ("class", "uniform"):
            raise ConfigError(f"'balance' must be 'class' or 'uniform', got {self.balance!r}")
        for name in ("max_replay_examples", "max_replay_tokens"):
            value = getattr(self, name)
            if value is not None:
                _check_int(name, value, minimum=0)
        for name in ("vector_column", "text_column", "label_column"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ConfigError(f"{name!r} must be a non-empty str, got {getattr(self, name)!r}")

    def replay_count(self, batch_size: int) -> int:
        """Replay examples to add to a batch of ``batch_size`` new ones (before token budgets)."""
        count = round(batch_size * self.ratio / (1.0 - self.ratio))
        if self.max_replay_examples is not None:
            count = min(count, self.max_replay_examples)
        return int(count)

    def pool_size(self, count: int) -> int:
        """MIR candidates to draw for ``count`` replay slots: ``ceil(count * pool_factor)``, > ``count``."""
        return math.ceil(count * self.pool_factor) if count > 0 else 0


@dataclasses.dataclass
class EWCConfig(ConfigMixin):
    """``lam``: penalty strength; ``gamma``: decay of the old Fisher in online EWC (1 = no decay);
    ``fisher``: "sampled" (labels drawn from the model) or "empirical" (the dataset's labels);
    ``max_examples``: cap on the examples used per consolidation (None = every example given)."""

    lam: float = 100.0  # the sweep in benchmarks/RESULTS.md chose it for the run's "ewc*" methods
    gamma: float = 1.0
    fisher: str = "sampled"
    max_examples: int | None = 512
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("lam", "gamma"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ConfigError(f"{name!r} must be a number >= 0, got {value!r}")
        if not self.gamma <= 1.0:
            raise ConfigError(f"'gamma' must be in [0, 1], got {self.gamma!r}")
        if self.fisher not in FISHER_MODES:
            raise ConfigError(f"'fisher' must be one of {list(FISHER_MODES)}, got {self.fisher!r}")
        if self.max_examples is not None and (
            isinstance(self.max_examples, bool)
            or not isinstance(self.max_examples, int)
            or self.max_examples < 1
        ):
            raise ConfigError(f"'max_examples' must be a positive int or None, got {self.max_examples!r}")
        check_seed(self.seed)


@dataclasses.dataclass
class LoRAConfig(ConfigMixin):
    """LoRA adapters of the ``lora-*`` run methods (``rehearsal.runner.strategies.lora``).

    ``r``, ``alpha``, ``dropout``: the adapter's rank, scale numerator and dropout; ``target_modules``:
    the attention projections to adapt (None: found by name, ``query``/``value`` for BERT-like models,
    ``q_proj``/``v_proj`` for Llama-like ones). ``router`` is how ``lora-routed`` picks an input's adapter:
    ``"gate"`` (a :class:`~rehearsal.methods.router.TaskGate` fine-tuned on the memory after each phase, for
    ``gate_epochs``) or ``"knn"`` (the memory's k-NN vote over ``route_k`` neighbours; no training).
    """

    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] | None = None
    router: str = "gate"
    gate_epochs: float = 2.0
    route_k: int = 16

    def __post_init__(self) -> None:
        _check_int("r", self.r, minimum=1)
        _check_int("route_k", self.route_k, minimum=1)
        _check_int("alpha", self.alpha, minimum=1)
        if self.router not in ADAPTER_ROUTERS:
            raise ConfigError(f"'router' must be one of {list(ADAPTER_ROUTERS)}, got {self.router!r}")
        epochs = self.gate_epochs
        if isinstance(epochs, bool) or not isinstance(epochs, (int, float)) or not 0 < epochs < float("inf"):
            raise ConfigError(f"'gate_epochs' must be a positive number, got {epochs!r}")
        _check_fraction("dropout", self.dropout, upper_open=True)
        names = self.target_modules
        if names is not None and not (
            isinstance(names, list) and names and all(isinstance(n, str) and n for n in names)
        ):
            raise ConfigError(f"'target_modules' must be a non-empty list of names or None, got {names!r}")
