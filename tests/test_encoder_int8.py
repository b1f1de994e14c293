"""The int8 encoder backend: built at first use from the bundled MiniLM into a cache, its neighbours near
fp32's, its name recorded by a memory (which then refuses another arithmetic), and our error with the
install line where onnxruntime is missing. The contract it shares with the openvino backend (name,
CPU only, a memory's record and refusal, the CLI's) is tested once for both in test_encoder_openvino.py."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator

import numpy as np
import pytest
from _encoders import TEXTS, private_cache, recall_at_10

from rehearsal.embedding import (
    DEFAULT_ENCODER_NAME,
    SentenceTransformerEncoder,
    default_model_path,
    load_encoder,
)
from rehearsal.errors import ConfigError
from rehearsal.int8_runtime import Int8Runner, require_onnxruntime
from rehearsal.runner.tasks import load_wordnet_stream

needs_onnxruntime = pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None,
    reason="onnxruntime not installed (pip install 'rehearsal[int8]')",
)


@pytest.fixture(scope="module", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    yield from private_cache(tmp_path_factory, "int8-cache")


@needs_onnxruntime
def test_int8_neighbours_stay_near_the_fp32_ones() -> None:
    stream = load_wordnet_stream(max_train_per_class=8, max_test_per_class=1, seed=3)
    texts = [ex.text for task in stream.tasks for ex in task.train][:300]
    fp32, int8 = load_encoder(), load_encoder(backend="int8")
    assert int8.name == f"{DEFAULT_ENCODER_NAME}+int8"
    a, b = fp32.encode(texts), int8.encode(texts)
    assert b.shape == a.shape
    assert b.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    cosine = np.sum(a * b, axis=1)
    assert float(np.mean(cosine)) >= 0.999
    assert float(np.min(cosine)) >= 0.99
    assert recall_at_10(a, b) >= 0.93  # 0.98 on 20k texts (benchmarks/encoder_int8.py)
    assert not np.array_equal(a, b)


def test_a_missing_onnxruntime_gives_our_error_with_the_install_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what an absent package imports as
    with pytest.raises(ConfigError, match=r"needs onnx(runtime)?: pip install 'rehearsal\[int8\]'"):
        require_onnxruntime()
    with pytest.raises(ConfigError, match=r"rehearsal\[int8\]"):
        SentenceTransformerEncoder(backend="int8")


@needs_onnxruntime
def test_the_cached_model_is_reused_and_a_damaged_one_rebuilt() -> None:
    encoder = load_encoder(backend="int8")
    tokenizer = encoder.model.tokenizer
    runner = Int8Runner(default_model_path(), tokenizer, 128, threads=1)
    built = runner.model_file.stat().st_mtime_ns
    assert Int8Runner(default_model_path(), tokenizer, 128, threads=1).model_file.stat().st_mtime_ns == built
    runner.model_file.write_bytes(b"not a model")
    rebuilt = Int8Runner(default_model_path(), tokenizer, 128, threads=1)
    np.testing.assert_allclose(rebuilt.encode(TEXTS, 4), runner.encode(TEXTS, 4), atol=1e-6)
