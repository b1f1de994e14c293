"""``rehearsal update --online``: a stream of small batches, admitted batch by batch (an audit entry each),
gated once per window of batches, stopped at the first window the gate blocks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rehearsal.cli.main import main
from rehearsal.crypto.keys import KeyRing
from rehearsal.deployment import online_update
from rehearsal.deployment.folder import Deployment
from rehearsal.deployment.init import init_deployment
from rehearsal.deployment.online_update import update_online
from rehearsal.errors import UpdateBlockedError, ValidationError
from rehearsal.governance.audit_log import AuditLog, default_log_path
from rehearsal.runner.sentiment import load_sentiment_stream
from tests.test_deployment import FAST, _memory, _write

RELAXED = {**FAST, "epochs": 1, "heldout": 0.0, "gate": {"max_drop": 1.0, "margin": 1.0}}


@pytest.fixture
def deployment(tmp_path: Path, tiny_model: str, encoder: Any) -> tuple[Path, KeyRing, Path]:
    keys = KeyRing.generate()
    stream = load_sentiment_stream(max_train_per_class=4, max_test_per_class=1)
    tweets, _, products, _ = stream.tasks
    _memory(tmp_path / "mem", keys, encoder, list(tweets.train))
    dep = tmp_path / "dep"
    init_deployment(dep, memory=tmp_path / "mem", model=tiny_model, keys=keys, options=RELAXED)
    return dep, keys, _write(tmp_path / "stream.jsonl", list(products.train))  # 12 examples


def _ingests(dep: Path, keys: KeyRing) -> list[dict[str, Any]]:
    log = AuditLog.open(default_log_path(dep / "memory"), keys, create=False)
    return [e.details for e in log.entries() if e.kind == "ingest"]


@pytest.mark.slow
def test_an_online_update_admits_batch_by_batch_and_gates_once_per_window(
    deployment: tuple[Path, KeyRing, Path],
) -> None:
    dep, keys, data = deployment
    before = len(_ingests(dep, keys))
    done = update_online(dep, data, batch_size=2, gate_every=3, keys=keys)
    assert [r.version for r in done.windows] == [2, 3]  # 12 examples, windows of 6: two gated updates
    assert done.blocked is None
    assert done.applied == 12
    new = _ingests(dep, keys)[before:]
    assert [entry["count"] for entry in new] == [2] * 6  # one entry per admitted batch of two
    generations = [entry["generation"] for entry in new]
    assert generations == sorted(generations)
    assert len(set(generations)) == 6
    assert Deployment.open(dep, keys).current()[0].version == 3


def test_a_blocked_window_stops_the_stream_and_says_where_to_go_on(
    deployment: tuple[Path, KeyRing, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    dep, keys, data = deployment
    calls: list[int] = []

    def second_window_blocked(path: Any, examples: list[Any], **kwargs: Any) -> Any:
        calls.append(len(examples))
        if len(calls) == 2:  # the fault: the gate refuses the second window
            raise UpdateBlockedError(
                "blocked", decision="fail", reasons=["regression:tweets"], update="update-x", codes=[]
            )
        return real(path, examples, **kwargs)

    real = online_update.update
    monkeypatch.setattr(online_update, "update", second_window_blocked)
    done = update_online(dep, data, batch_size=2, gate_every=3, keys=keys)
    assert calls == [6, 6]
    assert len(done.windows) == 1
    assert done.applied == 6
    assert done.blocked == {
        "first_example": 6,
        "decision": "fail",
        "reasons": ["regression:tweets"],
        "update": "update-x",
    }


def test_bad_cadences_and_stage_are_refused_before_anything_changes(
    deployment: tuple[Path, KeyRing, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    dep, keys, data = deployment
    with pytest.raises(ValidationError, match="batch_size"):
        update_online(dep, data, batch_size=0, keys=keys)
    with pytest.raises(ValidationError, match="gate_every"):
        update_online(dep, data, gate_every=-1, keys=keys)
    monkeypatch.setenv("REHEARSAL_MASTER_KEY", keys.export_base64())
    assert main(["update", str(dep), "--data", str(data), "--online", "--stage"]) != 0
    assert "--stage" in capsys.readouterr().err
    assert Deployment.open(dep, keys).current()[0].version == 1


@pytest.mark.slow
def test_the_cli_prints_a_line_per_window(
    deployment: tuple[Path, KeyRing, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    dep, keys, data = deployment
    monkeypatch.setenv("REHEARSAL_MASTER_KEY", keys.export_base64())
    capsys.readouterr()
    argv = ["update", str(dep), "--data", str(data), "--online", "--batch-size", "4", "--gate-every", "2"]
    assert main([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [w["version"] for w in report["windows"]] == [2, 3]  # windows of 8: 8 + 4 examples
    assert report["applied"] == 12
