"""A deployment that predicts through the memory: the gate and every answer use it; ``rehearsal predict``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from rehearsal.cli.main import main
from rehearsal.crypto.keys import KeyRing
from rehearsal.deployment.answers import MemoryAnswers
from rehearsal.deployment.init import init_deployment
from rehearsal.deployment.update import update
from rehearsal.runner.sentiment import load_sentiment_stream
from tests.test_deployment import FAST, _memory, _write

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ncm_deployment(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: str, encoder: Any
) -> tuple[Path, KeyRing]:
    tmp = tmp_path_factory.mktemp("ncm-dep")
    keys = KeyRing.generate()
    stream = load_sentiment_stream(max_train_per_class=4, max_test_per_class=4)
    tweets, movies, *_ = stream.tasks
    _memory(tmp / "mem", keys, encoder, list(tweets.train))
    options = {**FAST, "epochs": 1, "prediction": "ncm", "gate": {"max_drop": 1.0, "margin": 1.0}}
    init_deployment(tmp / "dep", memory=tmp / "mem", model=tiny_model, keys=keys, options=options)
    fitted: list[str] = []
    real_answer = MemoryAnswers.answer

    def counting_answer(self: MemoryAnswers, *args: Any, **kwargs: Any) -> Any:
        fitted.append(self.name)
        return real_answer(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(MemoryAnswers, "answer", counting_answer)
        update(tmp / "dep", _write(tmp / "movies.jsonl", list(movies.train)), keys=keys)
    # The update's scoring (regression suite, held-out data, the gate's figures) answered through ncm.
    assert fitted
    assert set(fitted) == {"ncm"}
    requests = tmp / "requests.jsonl"
    requests.write_text("".join(json.dumps({"text": ex.text}) + "\n" for ex in movies.test))
    return tmp, keys


def test_predict_writes_one_answer_per_request_with_its_latency(
    ncm_deployment: tuple[Path, KeyRing], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    tmp, keys = ncm_deployment
    monkeypatch.setenv("REHEARSAL_MASTER_KEY", keys.export_base64())
    out = tmp / "answers.jsonl"
    assert (
        main(
            ["predict", str(tmp / "dep"), "--data", str(tmp / "requests.jsonl"), "--out", str(out), "--json"]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["prediction"] == "ncm"
    assert summary["version"] == 2
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    requests = (tmp / "requests.jsonl").read_text().splitlines()
    assert [row["id"] for row in rows] == list(range(len(requests)))
    assert {row["label"] for row in rows} <= {"negative", "neutral", "positive"}
    assert all(row["latency_ms"] > 0 and -1.0 <= row["score"] <= 1.0 for row in rows)
    assert summary["latency"]["p50_ms"] > 0


def test_predict_writes_csv_when_asked(
    ncm_deployment: tuple[Path, KeyRing], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tmp, keys = ncm_deployment
    monkeypatch.setenv("REHEARSAL_MASTER_KEY", keys.export_base64())
    out = tmp / "answers.csv"
    assert main(["predict", str(tmp / "dep"), "--data", str(tmp / "requests.jsonl"), "--out", str(out)]) == 0
    assert out.read_text().splitlines()[0] == "id,label,score,latency_ms"


def test_predict_refuses_a_tampered_deployment(
    ncm_deployment: tuple[Path, KeyRing],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tmp, keys = ncm_deployment
    monkeypatch.setenv("REHEARSAL_MASTER_KEY", keys.export_base64())
    copy = tmp_path / "dep"
    shutil.copytree(tmp / "dep", copy)
    config = copy / "deployment.json"
    config.write_text(config.read_text().replace('"prediction": "ncm"', '"prediction": "head"'))
    status = main(["predict", str(copy), "--data", str(tmp / "requests.jsonl")])
    err = capsys.readouterr().err
    assert status != 0
    assert "deployment.json" in err
    assert len(err.strip().splitlines()) == 1


def test_predict_refuses_a_malformed_request_file(
    ncm_deployment: tuple[Path, KeyRing],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tmp, keys = ncm_deployment
    monkeypatch.setenv("REHEARSAL_MASTER_KEY", keys.export_base64())
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"txt": "no text field"}\n')
    status = main(["predict", str(tmp / "dep"), "--data", str(bad), "--out", str(tmp_path / "a.jsonl")])
    err = capsys.readouterr().err
    assert status != 0
    assert "line 2" in err
    assert "'text'" in err
    assert not (tmp_path / "a.jsonl").exists()
