"""The int8 backend of the sentence encoder: the quantized model is built at first use from the bundled
model's own files (nothing is downloaded), kept in a cache folder, and run by ONNX Runtime.

The cache key covers the model's weights and config and the quantization recipe, so a new model or
recipe builds a new file; a file that will not load is rebuilt once. The folder is ``$REHEARSAL_CACHE``,
else ``$XDG_CACHE_HOME/rehearsal``, else ``~/.cache/rehearsal``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rehearsal._files import atomic_write
from rehearsal.errors import ConfigError

__all__ = [
    "CACHE_ENV",
    "INSTALL_HINT",
    "Int8Runner",
    "cache_folder",
    "cpu_session",
    "model_inputs",
    "model_key",
    "pooled_encode",
    "require_onnxruntime",
]

CACHE_ENV = "REHEARSAL_CACHE"
INSTALL_HINT = "pip install 'rehearsal[int8]'"
# The files whose bytes define a model's arithmetic (the tokenizer is read from the same folder).
_MODEL_FILES = ("config.json", "model.safetensors", "pytorch_model.bin")


def require_onnxruntime() -> None:
    """Fail with our error, and the install line, where onnxruntime or onnx is missing."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            f"the int8 encoder backend needs {exc.name or 'onnxruntime'}: {INSTALL_HINT}"
        ) from None


def cache_folder() -> Path:
    """Where built int8 models are kept (see the module's docstring)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rehearsal"


def model_key(model_path: Path, recipe: dict[str, Any]) -> str:
    """16 hex digits naming a built model: the bytes of ``model_path``'s weights and config, and
    ``recipe`` (how it was built from them)."""
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode())
    for name in _MODEL_FILES:
        file = model_path / name
        if file.is_file():
            digest.update(name.encode())
            with file.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()[:16]


def model_inputs(tokenizer: Any, texts: list[str], max_length: int) -> dict[str, np.ndarray]:
    """An exported model's three int64 inputs for ``texts``, padded to the longest and truncated as
    sentence-transformers does."""
    batch = tokenizer(
        texts, padding=True, truncation="longest_first", max_length=max_length, return_tensors="np"
    )
    ids = np.asarray(batch["input_ids"], dtype=np.int64)
    types = batch.get("token_type_ids")
    return {
        "input_ids": ids,
        "attention_mask": np.asarray(batch["attention_mask"], dtype=np.int64),
        "token_type_ids": np.zeros_like(ids) if types is None else np.asarray(types, dtype=np.int64),
    }


def cpu_session(model: Path | bytes, threads: int) -> Any:
    """An ONNX Runtime CPU session of ``model`` (a file or serialized bytes) on ``threads`` threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    # The count the process chose (rehearsal.threads sizes torch's pool); ORT keeps a pool of its own.
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    source = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


class Int8Runner:
    """Encodes with the int8 model of the sentence-transformers model at ``model_path``: its tokenizer,
    the same truncation, mean pooling over real tokens and L2 normalisation as sentence-transformers."""

    def __init__(self, model_path: Path, tokenizer: Any, max_seq_length: int, *, threads: int) -> None:
        require_onnxruntime()
        self._tokenizer = tokenizer
        self._max_len = max_seq_length
        self._threads = threads
        from rehearsal.int8_graph import RECIPE

        key = model_key(model_path, {**RECIPE, "max_seq_length": max_seq_length})
        self.model_file = cache_folder() / "int8" / f"{model_path.name}-{key}.onnx"
        self._session = self._open(model_path)

    def _open(self, model_path: Path) -> Any:
        from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidGraph, InvalidProtobuf

        if not self.model_file.is_file():
            self._build(model_path)
        try:
            return self._session_of(self.model_file)
        except (Fail, InvalidGraph, InvalidProtobuf):
            self._build(model_path)  # a torn or foreign file under our name: build it again, once
            return self._session_of(self.model_file)

    def _session_of(self, path: Path) -> Any:
        return cpu_session(path, self._threads)

    def _build(self, model_path: Path) -> None:
        import onnx

        from rehearsal.int8_graph import activation_ranges, calibration_texts, export_fp32, quantize_graph

        self.model_file.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.model_file.parent) as scratch:
            fp32_file = Path(scratch) / "fp32.onnx"
            export_fp32(model_path, fp32_file)
            fp32 = onnx.load(str(fp32_file))
        ranges = activation_ranges(fp32, calibration_texts(), self.tokenize, threads=self._threads)
        atomic_write(self.model_file, quantize_graph(fp32, ranges).SerializeToString())

    def tokenize(self, texts: list[str]) -> dict[str, np.ndarray]:
        """The model's three int64 inputs for ``texts`` (:func:`model_inputs`)."""
        return model_inputs(self._tokenizer, texts, self._max_len)

    def encode(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        """(len(texts), dim) float32 unit rows (see :func:`pooled_encode`)."""
        return pooled_encode(self._session, self.tokenize, texts, batch_size)


def pooled_encode(session: Any, tokenize: Any, texts: Sequence[str], batch_size: int) -> np.ndarray:
    """Unit rows of mean-pooled last hidden states from an ONNX ``session``. Batches are cut from the texts
    sorted by length, as sentence-transformers does, so little of each batch is padding."""
    order = np.argsort([-len(text) for text in texts], kind="stable")
    out: np.ndarray | None = None
    for start in range(0, len(texts), batch_size):
        rows = order[start : start + batch_size]
        feeds = tokenize([texts[i] for i in rows])
        hidden = session.run(None, feeds)[0]
        mask = feeds["attention_mask"][..., None].astype(np.float32)
        pooled = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
        if out is None:
            out = np.empty((len(texts), pooled.shape[1]), dtype=np.float32)
        out[rows] = pooled
    if out is None:
        raise ConfigError("no texts to encode")  # the encoder answers an empty batch before this
    out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return out
