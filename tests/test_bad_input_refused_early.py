"""Bad input is our own error, raised before anything is made or changed (issue 28): a lone surrogate in
a data file, a seed numpy cannot take, a metadata key JSON would change, an empty delete."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rehearsal.cli.main import main
from rehearsal.config import MAX_SEED, ReplayConfig
from rehearsal.crypto.keys import KeyRing
from rehearsal.deployment.config import DeploymentConfig
from rehearsal.deployment.examples import read_examples
from rehearsal.errors import ConfigError, ValidationError
from rehearsal.governance.audit_log import AuditLog
from rehearsal.governance.audited import AuditedMemory
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.runner.config import RunConfig

# What a JSON file holds when it escapes half of a surrogate pair: valid JSON, not text.
SURROGATE_ROW = '{"text": "caf\\ud800", "label": "a", "task": "t", "split": "train"}\n'


def _stream_file(path: Path, bad_line: str) -> Path:
    rows = [{"text": f"t{i}", "label": "ab"[i % 2], "task": "t", "split": s} for i, s in enumerate("tttt")]
    rows = [{**r, "split": "train" if i < 2 else "test"} for i, r in enumerate(rows)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + bad_line)
    return path


def test_a_lone_surrogate_in_update_data_is_named_by_its_line(tmp_path: Path) -> None:
    data = _stream_file(tmp_path / "update.jsonl", SURROGATE_ROW)
    with pytest.raises(
        ValidationError,
        match=r"update\.jsonl line 5: is not valid Unicode text \(a lone surrogate, \\ud800\)",
    ):
        read_examples(data)


def test_a_lone_surrogate_in_a_runs_data_fails_before_the_run_folder_is_made(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _stream_file(tmp_path / "stream.jsonl", SURROGATE_ROW)
    out = tmp_path / "out"
    config = tmp_path / "run.toml"
    config.write_text(f'method = "naive"\ndata = "{data}"\noutput_dir = "{out}"\n')
    assert main(["run", str(config)]) == 1
    err = capsys.readouterr().err
    assert "stream.jsonl line 5: is not valid Unicode text" in err
    assert "Traceback" not in err
    assert not out.exists()


def test_a_lone_surrogate_in_ingested_data_creates_no_memory(
    tmp_path: Path, keys: KeyRing, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from rehearsal.cli.main import KEY_ENV

    monkeypatch.setenv(KEY_ENV, keys.export_base64())
    data = _stream_file(tmp_path / "records.jsonl", SURROGATE_ROW)
    assert main(["ingest", str(tmp_path / "mem"), str(data)]) == 1
    assert "records.jsonl line 5: is not valid Unicode text" in capsys.readouterr().err
    assert not (tmp_path / "mem" / "memory.json").exists()


@pytest.mark.parametrize("seed", [10**23, MAX_SEED + 1, -1])
def test_a_seed_numpy_cannot_take_is_a_config_error(seed: int) -> None:
    for make in (
        lambda: RunConfig(seed=seed),
        lambda: ReplayConfig(seed=seed),
        lambda: DeploymentConfig(seed=seed),
    ):
        with pytest.raises(ConfigError, match=r"'seed' must be an int in \[0, 2\*\*32 - 1\]"):
            make()
    RunConfig(seed=MAX_SEED)  # the largest seed numpy takes is fine


def test_run_and_compare_refuse_a_huge_seed_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "run.toml"
    config.write_text(f'method = "naive"\noutput_dir = "{tmp_path / "out"}"\n')
    huge = str(10**23)
    assert main(["run", str(config), "--set", f"seed={huge}"]) == 1
    assert "'seed' must be an int in [0, 2**32 - 1]" in capsys.readouterr().err
    assert main(["compare", str(config), "--methods", "naive", "--seeds", f"0,{huge}"]) == 1
    err = capsys.readouterr().err
    assert "'seed' must be an int in [0, 2**32 - 1]" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


DIM = 4


@pytest.mark.parametrize(
    "meta",
    [{1: "a"}, {"extra": {2: "b"}}, {"extra": [{None: "c"}]}],
    ids=["top-level", "nested", "in-a-list"],
)
def test_a_metadata_key_that_is_not_a_string_is_refused(tmp_path: Path, keys: KeyRing, meta: dict) -> None:  # type: ignore[type-arg]
    with RehearsalMemory.create(tmp_path / "mem", keys=keys, dim=DIM, encoder_name="test-encoder") as memory:
        with pytest.raises(ValidationError, match=r"metadata\[0\] has a key that is not a string"):
            memory.add(["a"], metadata=[meta], vectors=np.eye(DIM, dtype=np.float32)[:1])
        assert len(memory) == 0
        assert memory.generation == 0


def test_an_empty_delete_changes_nothing(tmp_path: Path, keys: KeyRing) -> None:
    with RehearsalMemory.create(tmp_path / "mem", keys=keys, dim=DIM, encoder_name="test-encoder") as memory:
        memory.add(["a"], vectors=np.eye(DIM, dtype=np.float32)[:1])
        generation = memory.generation
        assert memory.delete([]) == 0
        assert memory.generation == generation
        log = AuditLog.open(tmp_path / "mem" / "audit.log", keys)
        audited = AuditedMemory(memory, log)
        entries = len(log.entries())
        assert audited.delete([]) == 0
        assert len(log.entries()) == entries
        assert memory.generation == generation
