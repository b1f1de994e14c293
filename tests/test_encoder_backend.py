"""The encoder's arithmetic (fp32, the reference; bf16 autocast): bf16 vectors stay near fp32's, and a
memory records which one made its vectors and refuses the other."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _encoders import TEXTS

from rehearsal.cli.main import main
from rehearsal.crypto.keys import KeyRing
from rehearsal.embedding import (
    DEFAULT_ENCODER_NAME,
    cpu_has_native_bf16,
    load_encoder,
    resolve_backend,
    split_backend,
)
from rehearsal.errors import ConfigError, EncoderMismatchError
from rehearsal.memory.facade import RehearsalMemory


def test_bf16_vectors_are_unit_rows_near_the_fp32_ones() -> None:
    fp32, bf16 = load_encoder(), load_encoder(backend="bf16")
    assert fp32.name == DEFAULT_ENCODER_NAME
    assert bf16.name == f"{DEFAULT_ENCODER_NAME}+bf16"
    a, b = fp32.encode(TEXTS), bf16.encode(TEXTS)
    assert b.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    assert float(np.min(np.sum(a * b, axis=1))) > 0.99
    assert not np.array_equal(a, b)  # it is another arithmetic, hence another name


def test_backend_names_are_checked_and_auto_follows_the_cpu() -> None:
    with pytest.raises(ConfigError, match="encoder backend"):
        resolve_backend("int4")
    assert resolve_backend("auto") == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert resolve_backend("auto", "cuda:0") == "bf16"
    assert split_backend(f"{DEFAULT_ENCODER_NAME}+bf16") == (DEFAULT_ENCODER_NAME, "bf16")
    assert split_backend("my-model+v2") == ("my-model+v2", "fp32")  # a '+' in a name is no backend


def test_a_memory_reopens_with_its_own_backend_and_refuses_the_other(tmp_path: Path) -> None:
    keys = KeyRing.generate()
    with RehearsalMemory.create(tmp_path / "m", keys=keys, encoder=load_encoder(backend="bf16")) as memory:
        memory.add(TEXTS, metadata=[{"task": "t", "label": i % 2} for i in range(len(TEXTS))])
    with RehearsalMemory.open(tmp_path / "m", keys=keys, read_only=True) as memory:
        assert memory.encoder_name.endswith("+bf16")
        assert memory.encoder.name == load_encoder(backend="bf16").name
        hits = memory.search([TEXTS[0]], k=1)[0]
        assert memory.get_texts([hits[0].id]) == [TEXTS[0]]
    with pytest.raises(EncoderMismatchError):
        RehearsalMemory.open(tmp_path / "m", keys=keys, encoder=load_encoder())
    with RehearsalMemory.open(tmp_path / "m", keys=keys, read_only=True) as memory:
        assert len(memory) == len(TEXTS)


def test_the_cli_records_the_backend_and_refuses_a_mix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REHEARSAL_MASTER_KEY", KeyRing.generate().export_base64())
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": i % 2}) + "\n" for i, t in enumerate(TEXTS)))
    path = str(tmp_path / "mem")
    assert main(["init", path, "--encoder-backend", "bf16"]) == 0
    assert main(["ingest", path, str(data), "--task", "t", "--quiet"]) == 0  # its own backend, unasked
    capsys.readouterr()
    assert main(["ingest", path, str(data), "--task", "t", "--encoder-backend", "fp32"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "bf16" in err[0]
    assert main(["stats", path, "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["encoder"].endswith("+bf16")
    assert stats["entries"] == len(TEXTS)  # the refused ingest added nothing


def test_a_runs_memory_is_embedded_by_the_configured_backend_and_a_resume_keeps_it(
    tmp_path: Path, tiny_model: str, tiny_stream: object, master_key: None
) -> None:
    """``encoder_backend`` reaches the memory a run creates (its manifest names the arithmetic), and a
    resume under another backend is refused before anything trains."""
    from _models import tiny_run_config

    from rehearsal.runner import loop
    from rehearsal.runner.state import run_memory
    from rehearsal.store.layout import peek_manifest

    config = tiny_run_config(tmp_path, tiny_model, method="retrieval", encoder_backend="bf16")
    loop.run(config, stream=tiny_stream)  # type: ignore[arg-type]
    name = peek_manifest(run_memory(config.output_dir))["encoder"]["name"]
    assert split_backend(name) == (DEFAULT_ENCODER_NAME, "bf16")
    fp32 = tiny_run_config(tmp_path, tiny_model, method="retrieval")
    with pytest.raises(ConfigError, match="encoder_backend"):
        loop.run(fp32, stream=tiny_stream, resume=True)  # type: ignore[arg-type]


def test_a_bad_run_encoder_backend_is_refused() -> None:
    from rehearsal.runner.config import RunConfig

    with pytest.raises(ConfigError, match="'encoder_backend' must be one of"):
        RunConfig(encoder_backend="fp16")
