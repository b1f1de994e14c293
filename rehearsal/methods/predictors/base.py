"""The predictor protocol over a classifier's features, its registry, and how a fitted predictor persists.

A *feature predictor* turns the features a sequence classifier's head receives (``features.encoder_features``:
one forward pass, shared by every predictor) into labels. ``fit`` takes the features of labelled examples
drawn from the memory (and the model's head, for the predictors that start from it); ``scores`` gives one
column per known class. The registry ``PREDICTORS`` is the only list of them: configs validate against it.

A fitted predictor is saved as ``predictor.json`` (its name, options and classes) and ``arrays.bin`` (its
arrays, sealed under the memory's master key when one is given: per-example features are as invertible as
the memory's vectors, so they get the same protection).
"""

from __future__ import annotations

import io
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from rehearsal._files import atomic_write
from rehearsal.config import PREDICTOR_NAMES
from rehearsal.errors import ConfigError, IntegrityError, StoreFormatError, ValidationError

if TYPE_CHECKING:
    import torch

    from rehearsal.crypto.keys import KeyRing

__all__ = [
    "PREDICTORS",
    "FeaturePredictor",
    "load_predictor",
    "make_predictor",
    "register_predictor",
    "save_predictor",
]

FORMAT = "rehearsal-predictor/1"
_META, _ARRAYS = "predictor.json", "arrays.bin"


class FeaturePredictor(ABC):
    """Labels from head-input features. Subclasses set ``name`` and implement the four abstract methods."""

    name: ClassVar[str]
    # Whether fit needs the model's classification head (head and local start from its weights).
    needs_head: ClassVar[bool] = False

    def __init__(self) -> None:
        self.classes: list[int] = []

    @property
    def fitted(self) -> bool:
        return bool(self.classes)

    @abstractmethod
    def fit(
        self, features: torch.Tensor, labels: Sequence[int], *, head: torch.nn.Linear | None = None
    ) -> None:
        """Fit on ``features`` (n, d) of examples labelled ``labels`` (n,)."""

    @abstractmethod
    def scores(self, features: torch.Tensor) -> torch.Tensor:
        """(n, len(classes)) float32: higher is more likely, one column per entry of ``classes``."""

    @abstractmethod
    def options(self) -> dict[str, Any]:
        """The constructor's keyword arguments, as saved beside the arrays."""

    @abstractmethod
    def arrays(self) -> dict[str, np.ndarray]:
        """The fitted state as named arrays (restored by :meth:`restore`)."""

    @abstractmethod
    def restore(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Set the fitted state from :meth:`arrays`' output."""

    def predict(self, features: torch.Tensor) -> np.ndarray:
        """(n,) int64: the best-scoring class of each row of ``features`` (n, d)."""
        if not self.fitted:
            raise ConfigError(f"predictor {self.name!r} is not fitted; call fit() first")
        if len(features) == 0:
            return np.empty(0, dtype=np.int64)
        best = self.scores(features).argmax(dim=1).numpy()
        predicted: np.ndarray = np.asarray(self.classes, dtype=np.int64)[best]
        return predicted


PREDICTORS: dict[str, type[FeaturePredictor]] = {}


def register_predictor(cls: type[FeaturePredictor]) -> type[FeaturePredictor]:
    """Class decorator: make ``cls`` selectable by its ``name`` everywhere a predictor is named."""
    if cls.name not in PREDICTOR_NAMES or cls.name in PREDICTORS:
        raise ConfigError(f"predictor {cls.name!r} is registered twice or not among {list(PREDICTOR_NAMES)}")
    PREDICTORS[cls.name] = cls
    return cls


def make_predictor(name: str, **options: Any) -> FeaturePredictor:
    """A new, unfitted predictor ``name`` (one of :data:`PREDICTORS`) with ``options``."""
    if name not in PREDICTORS:
        raise ConfigError(f"unknown predictor {name!r}; known: {sorted(PREDICTORS)}")
    try:
        return PREDICTORS[name](**options)
    except TypeError as exc:
        raise ConfigError(f"bad options for predictor {name!r}: {exc}") from None


def check_fit_input(features: torch.Tensor, labels: Sequence[int]) -> list[int]:
    """``labels`` as ints after checking they pair with ``features``' rows; ValidationError otherwise."""
    if len(features) != len(labels) or not len(labels):
        raise ValidationError(
            f"fitting needs one label per feature row, got {len(labels)} for {len(features)}"
        )
    return [int(v) for v in labels]


def _context(name: str) -> bytes:
    return f"{FORMAT}:{name}".encode()


def save_predictor(predictor: FeaturePredictor, folder: str | Path, *, keys: KeyRing | None = None) -> Path:
    """Write a fitted ``predictor`` into ``folder`` (created); its arrays sealed under ``keys`` if given."""
    if not predictor.fitted:
        raise ConfigError(f"predictor {predictor.name!r} is not fitted; nothing to save")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    arrays = {"classes": np.asarray(predictor.classes, dtype=np.int64), **predictor.arrays()}
    np.savez(buffer, allow_pickle=False, **arrays)
    payload = buffer.getvalue()
    if keys is not None:
        payload = keys.wrap(payload, context=_context(predictor.name))
    meta = {
        "format": FORMAT,
        "name": predictor.name,
        "options": predictor.options(),
        "sealed": keys is not None,
    }
    # Arrays first, then the description that points at them: a reader never finds a json without arrays.
    atomic_write(out / _ARRAYS, payload)
    atomic_write(out / _META, (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())
    return out


def load_predictor(folder: str | Path, *, keys: KeyRing | None = None) -> FeaturePredictor:
    """The predictor :func:`save_predictor` wrote into ``folder``; sealed arrays need the same ``keys``."""
    src = Path(folder)
    try:
        meta = json.loads((src / _META).read_text(encoding="utf-8"))
        payload = (src / _ARRAYS).read_bytes()
    except FileNotFoundError as exc:
        raise StoreFormatError(
            f"{str(src)!r} holds no saved predictor ({Path(exc.filename).name} missing)"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StoreFormatError(f"{str(src / _META)!r} is not a predictor description: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise StoreFormatError(f"{str(src / _META)!r} is not a {FORMAT} description")
    name, sealed = meta.get("name"), meta.get("sealed")
    if sealed:
        if keys is None:
            raise ConfigError(f"the predictor in {str(src)!r} is sealed; pass the memory's master key")
        payload = keys.unwrap(payload, context=_context(str(name)))
    options = meta.get("options")
    predictor = make_predictor(str(name), **(options if isinstance(options, dict) else {}))
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (ValueError, OSError) as exc:
        raise IntegrityError(f"the arrays of the predictor in {str(src)!r} are damaged: {exc}") from None
    predictor.classes = [int(c) for c in arrays.pop("classes")]
    predictor.restore(arrays)
    return predictor
