"""The OpenVINO encoder backend: the bundled MiniLM exported at first use into a cache and run by
OpenVINO's CPU runtime, its neighbours near fp32's, its name recorded by a memory (which then refuses
another arithmetic), and our error with the install line where openvino is missing. openvino is in the
dev extra, so these run wherever the test command runs. The contract both exported backends keep (the
name, the CPU only, a memory's record and refusal, the CLI's) is tested here for int8 too."""

from __future__ import annotations

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
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.openvino_runtime import OpenVinoRunner, require_openvino
from rehearsal.runner.tasks import load_wordnet_stream


@pytest.fixture(scope="module", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    yield from private_cache(tmp_path_factory, "openvino-cache")


def test_openvino_neighbours_stay_near_the_fp32_ones() -> None:
    stream = load_wordnet_stream(max_train_per_class=8, max_test_per_class=1, seed=3)
    texts = [ex.text for task in stream.tasks for ex in task.train][:300]
    fp32, ov = load_encoder(), load_encoder(backend="openvino")
    assert ov.name == f"{DEFAULT_ENCODER_NAME}+openvino"
    a, b = fp32.encode(texts), ov.encode(texts)
    assert b.shape == a.shape
    assert b.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    cosine = np.sum(a * b, axis=1)
    assert float(np.mean(cosine)) >= 0.999
    assert float(np.min(cosine)) >= 0.995
    assert recall_at_10(a, b) >= 0.97  # 0.995 on 20k texts (benchmarks/encoder_backend.py)


# The contract both exported backends keep (int8 and openvino), tested once for each.
EXPORTED = pytest.mark.parametrize("backend", ["int8", "openvino"])


@EXPORTED
def test_an_exported_backend_is_a_name_auto_never_picks(backend: str) -> None:
    assert resolve_backend(backend) == backend
    assert resolve_backend("auto") != backend
    assert split_backend(f"{DEFAULT_ENCODER_NAME}+{backend}") == (DEFAULT_ENCODER_NAME, backend)


@EXPORTED
def test_an_exported_backend_off_the_cpu_is_refused(backend: str) -> None:
    with pytest.raises(ConfigError, match="CPU only"):
        SentenceTransformerEncoder(backend=backend, device="cuda")


def test_a_missing_openvino_gives_our_error_with_the_install_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # what an absent package imports as
    with pytest.raises(ConfigError, match=r"needs openvino: pip install 'rehearsal\[openvino\]'"):
        require_openvino()
    with pytest.raises(ConfigError, match=r"rehearsal\[openvino\]"):
        SentenceTransformerEncoder(backend="openvino")


def test_the_cached_export_is_reused_and_a_damaged_one_rebuilt() -> None:
    tokenizer = load_encoder(backend="openvino").model.tokenizer
    runner = OpenVinoRunner(default_model_path(), tokenizer, 128, threads=1)
    built = runner.model_file.stat().st_mtime_ns
    again = OpenVinoRunner(default_model_path(), tokenizer, 128, threads=1)
    assert again.model_file.stat().st_mtime_ns == built
    runner.model_file.write_bytes(b"not a model")
    rebuilt = OpenVinoRunner(default_model_path(), tokenizer, 128, threads=1)
    assert rebuilt.model_file.stat().st_mtime_ns != built
    np.testing.assert_allclose(rebuilt.encode(TEXTS, 4), runner.encode(TEXTS, 4), atol=1e-6)


@EXPORTED
def test_a_memory_reopens_with_its_exported_backend_and_refuses_fp32(tmp_path: Path, backend: str) -> None:
    keys = KeyRing.generate()
    encoder = load_encoder(backend=backend)
    with RehearsalMemory.create(tmp_path / "m", keys=keys, encoder=encoder) as memory:
        memory.add(TEXTS, metadata=[{"task": "t", "label": i % 2} for i in range(len(TEXTS))])
    with RehearsalMemory.open(tmp_path / "m", keys=keys, read_only=True) as memory:
        assert memory.encoder_name == f"{DEFAULT_ENCODER_NAME}+{backend}"
        assert memory.encoder.name == memory.encoder_name
        hits = memory.search([TEXTS[0]], k=1)[0]
        assert memory.get_texts([hits[0].id]) == [TEXTS[0]]
    with pytest.raises(EncoderMismatchError):
        RehearsalMemory.open(tmp_path / "m", keys=keys, encoder=load_encoder())


@EXPORTED
def test_the_cli_records_an_exported_backend_and_refuses_bf16(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], backend: str
) -> None:
    monkeypatch.setenv("REHEARSAL_MASTER_KEY", KeyRing.generate().export_base64())
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": i % 2}) + "\n" for i, t in enumerate(TEXTS)))
    path = str(tmp_path / "mem")
    assert main(["init", path, "--encoder-backend", backend]) == 0
    assert main(["ingest", path, str(data), "--task", "t", "--quiet"]) == 0  # its own backend, unasked
    capsys.readouterr()
    assert main(["ingest", path, str(data), "--task", "t", "--encoder-backend", "bf16"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert backend in err[0]
