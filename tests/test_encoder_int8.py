"""The int8 encoder backend: built at first use from the bundled MiniLM into a cache, its neighbours near
fp32's, its name recorded by a memory (which then refuses another arithmetic), and our error with the
install line where onnxruntime is missing."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from _encoders import TEXTS, private_cache, recall_at_10

from rehearsal.cli.main import main
from rehearsal.crypto.keys import KeyRing
from rehearsal.embedding import (
    DEFAULT_ENCODER_NAME,
    SentenceTransformerEncoder,
    default_model_path,
    load_encoder,
    resolve_backend,
    split_backend,
)
from rehearsal.errors import ConfigError, EncoderMismatchError
from rehearsal.int8_runtime import Int8Runner, require_onnxruntime
from rehearsal.memory.facade import RehearsalMemory
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


def test_int8_is_a_backend_name_auto_never_picks() -> None:
    assert resolve_backend("int8") == "int8"
    assert resolve_backend("auto") != "int8"
    assert split_backend(f"{DEFAULT_ENCODER_NAME}+int8") == (DEFAULT_ENCODER_NAME, "int8")


def test_int8_off_the_cpu_is_refused() -> None:
    with pytest.raises(ConfigError, match="CPU only"):
        SentenceTransformerEncoder(backend="int8", device="cuda")


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


@needs_onnxruntime
def test_a_memory_reopens_with_int8_and_refuses_fp32(tmp_path: Path) -> None:
    keys = KeyRing.generate()
    with RehearsalMemory.create(tmp_path / "m", keys=keys, encoder=load_encoder(backend="int8")) as memory:
        memory.add(TEXTS, metadata=[{"task": "t", "label": i % 2} for i in range(len(TEXTS))])
    with RehearsalMemory.open(tmp_path / "m", keys=keys, read_only=True) as memory:
        assert memory.encoder_name == f"{DEFAULT_ENCODER_NAME}+int8"
        assert memory.encoder.name == memory.encoder_name
        hits = memory.search([TEXTS[0]], k=1)[0]
        assert memory.get_texts([hits[0].id]) == [TEXTS[0]]
    with pytest.raises(EncoderMismatchError):
        RehearsalMemory.open(tmp_path / "m", keys=keys, encoder=load_encoder())


@needs_onnxruntime
def test_the_cli_records_int8_and_refuses_bf16(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REHEARSAL_MASTER_KEY", KeyRing.generate().export_base64())
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": i % 2}) + "\n" for i, t in enumerate(TEXTS)))
    path = str(tmp_path / "mem")
    assert main(["init", path, "--encoder-backend", "int8"]) == 0
    assert main(["ingest", path, str(data), "--task", "t", "--quiet"]) == 0  # its own backend, unasked
    capsys.readouterr()
    assert main(["ingest", path, str(data), "--task", "t", "--encoder-backend", "bf16"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "int8" in err[0]
    assert main(["stats", path, "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["encoder"].endswith("+int8")
    assert stats["entries"] == len(TEXTS)
