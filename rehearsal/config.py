"""Configuration dataclasses: each validates itself in ``__post_init__`` and round-trips through JSON."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from rehearsal.errors import ConfigError

__all__ = ["REPLAY_MODES", "ConfigMixin", "ReplayConfig"]

C = TypeVar("C", bound="ConfigMixin")

REPLAY_MODES = ("retrieval", "random", "hybrid")


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
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")

    @classmethod
    def load(cls: type[C], path: str | os.PathLike[str]) -> C:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read {cls.__name__} from {str(path)!r}: {exc}") from exc
        return cls.from_dict(data)


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
    ``round(b * ratio / (1 - ratio))`` old ones (0.25 with b=24 gives 8, i.e. 8 of 32).
    ``mark_replay`` adds an ``is_replay`` column that a plain model does not accept: use it only with
    ``rehearsal.trainer.RehearsalTrainer``, which removes it before the forward pass.
    In ``hybrid`` mode ``random_share`` of the replay is drawn at random (``balance="class"``: class by class)
    from the whole eligible memory so that old tasks far from the new data are not starved, and the rest
    are the nearest neighbours of the batch (``k`` per new example, merged and de-duplicated).
    """

    ratio: float = 0.25
    k: int = 4
    mode: str = "hybrid"
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

    def __post_init__(self) -> None:
        _check_fraction("ratio", self.ratio, upper_open=True)
        _check_fraction("random_share", self.random_share)
        _check_int("k", self.k, minimum=1)
        _check_int("max_length", self.max_length, minimum=1)
        _check_int("seed", self.seed, minimum=0)
        _check_int("search_threads", self.search_threads, minimum=1)
        if self.mode not in REPLAY_MODES:
            raise ConfigError(f"'mode' must be one of {list(REPLAY_MODES)}, got {self.mode!r}")
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
