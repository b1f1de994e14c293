"""`rehearsal gate`: a harmful update exits 4, a good one 0, flagged PII 3; the decision can be audited."""

import json

import pytest

from rehearsal.cli.gate_verbs import EXIT_FAIL, EXIT_NEEDS_APPROVAL
from rehearsal.cli.main import main
from rehearsal.crypto.keys import KeyRing
from rehearsal.governance.audit_log import AuditLog
from rehearsal.runner.metrics import AccuracyMatrix


@pytest.fixture
def baseline(tmp_path):
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps({"living": 0.80, "verbs": 0.70}))
    return str(path)


def _results(tmp_path, name, last_row):
    matrix = AccuracyMatrix(["living", "verbs", "modifiers"])
    matrix.record(0, 0, 0.9)
    for task, acc in last_row.items():
        matrix.record(1, task, acc)
    path = tmp_path / name
    path.write_text(json.dumps({"accuracy": matrix.to_dict()}))
    return str(path)


def test_harmful_update_is_blocked(tmp_path, baseline, capsys):
    candidate = _results(tmp_path, "bad.json", {"living": 0.10, "verbs": 0.95})
    assert main(["gate", "--baseline", baseline, "--candidate", candidate]) == EXIT_FAIL
    out = capsys.readouterr().out
    assert "gate: fail" in out
    assert "'living'" in out


def test_good_update_passes(tmp_path, baseline, capsys):
    candidate = _results(tmp_path, "good.json", {"living": 0.79, "verbs": 0.75})
    assert main(["gate", "--baseline", baseline, "--candidate", candidate, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["decision"] == "pass"


def test_pii_in_replay_texts_needs_approval_and_is_audited(tmp_path, baseline, monkeypatch, capsys):
    keys = KeyRing.generate()
    monkeypatch.setenv("REHEARSAL_MASTER_KEY", keys.export_base64())
    replay = tmp_path / "replay.txt"
    replay.write_text("refund to jane.doe@example.com please\nan ordinary gloss\n")
    candidate = _results(tmp_path, "good.json", {"living": 0.80, "verbs": 0.72})
    log = tmp_path / "audit.log"
    argv = ["gate", "--baseline", baseline, "--candidate", candidate, "--replay-texts", str(replay)]
    assert main([*argv, "--log", str(log), "--run-id", "run-7"]) == EXIT_NEEDS_APPROVAL
    assert "jane.doe" not in capsys.readouterr().out
    entries = AuditLog.open(log, keys).entries()
    assert entries[-1].kind == "train-update"
    assert entries[-1].details["gate"] == "needs-approval"
    assert "jane.doe" not in log.read_text()


def test_unreadable_accuracies_fail_in_one_line(tmp_path, baseline, capsys):
    assert main(["gate", "--baseline", baseline, "--candidate", str(tmp_path / "absent.json")]) == 1
    assert capsys.readouterr().err.count("\n") == 1
