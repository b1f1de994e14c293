"""The OpenVINO backend of the sentence encoder: the bundled model exported to ONNX at first use (nothing is
downloaded), kept in the cache folder beside the int8 model, and run by OpenVINO's CPU runtime with its
bf16 precision hint: on a CPU with native bf16 (AMX, AVX-512 BF16) its matrix products run in bf16 with
fused kernels, which torch's autocast does not reach (3.3x torch fp32's texts/s here at recall@10 0.995,
benchmarks/RESULTS.md, issue 30); elsewhere OpenVINO keeps fp32.

Pooling and normalisation are sentence-transformers' own, in numpy (``int8_runtime.pooled_encode``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rehearsal.errors import ConfigError
from rehearsal.int8_runtime import cache_folder, model_inputs, model_key, pooled_encode

__all__ = ["INSTALL_HINT", "OpenVinoRunner", "require_openvino"]

INSTALL_HINT = "pip install 'rehearsal[openvino]'"
# What the cached file is: the fp32 export of the model (bump when the export changes).
_RECIPE = {"export": "fp32 onnx, last hidden state", "version": 1}


def require_openvino() -> None:
    """Fail with our error, and the install line, where openvino (or onnx, for the export) is missing."""
    try:
        import onnx  # noqa: F401
        import openvino  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            f"the openvino encoder backend needs {exc.name or 'openvino'}: {INSTALL_HINT}"
        ) from None


class OpenVinoRunner:
    """Encodes with OpenVINO's compiled copy of the sentence-transformers model at ``model_path``: its
    tokenizer, the same truncation, mean pooling over real tokens and L2 normalisation."""

    def __init__(self, model_path: Path, tokenizer: Any, max_seq_length: int, *, threads: int) -> None:
        require_openvino()
        self._tokenizer = tokenizer
        self._max_len = max_seq_length
        key = model_key(model_path, {**_RECIPE, "max_seq_length": max_seq_length})
        self.model_file = cache_folder() / "openvino" / f"{model_path.name}-{key}.onnx"
        self._request = self._compile(model_path, threads)

    def _compile(self, model_path: Path, threads: int) -> Any:
        import openvino as ov

        core = ov.Core()
        if not self.model_file.is_file():
            self._build(model_path)
        try:
            model = core.read_model(str(self.model_file))
        except RuntimeError:
            self._build(model_path)  # a torn or foreign file under our name: build it again, once
            model = core.read_model(str(self.model_file))
        config = {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "INFERENCE_PRECISION_HINT": "bf16"}
        return core.compile_model(model, "CPU", config).create_infer_request()

    def _build(self, model_path: Path) -> None:
        from rehearsal.int8_graph import export_fp32

        self.model_file.parent.mkdir(parents=True, exist_ok=True)
        # Exported into a scratch file beside the cache entry and renamed over it: a reader never sees
        # half a file under the cache's name.
        with tempfile.TemporaryDirectory(dir=self.model_file.parent) as scratch:
            built = Path(scratch) / "model.onnx"
            export_fp32(model_path, built)
            built.replace(self.model_file)

    def run(self, _outputs: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The last hidden state for ``feeds``, as an ONNX Runtime session's ``run`` gives it."""
        return [next(iter(self._request.infer(feeds).values()))]

    def encode(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        """(len(texts), dim) float32 unit rows."""
        return pooled_encode(self, self._tokenize, texts, batch_size)

    def _tokenize(self, texts: list[str]) -> dict[str, np.ndarray]:
        return model_inputs(self._tokenizer, texts, self._max_len)
