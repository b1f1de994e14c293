"""Deployment messages that say what happened and the exact next command (issue 29)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from rehearsal.cli.governance_verbs import _after_approval
from rehearsal.cli.main import main
from rehearsal.crypto.keys import KeyRing
from rehearsal.governance.gate import GateConfig
from rehearsal.governance.updates import _staging_reason
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.runner.sentiment import load_sentiment_stream


def test_a_zero_margin_and_a_zero_change_print_without_a_minus_sign() -> None:
    row = {"delta": -0.0, "low": -0.0001, "high": 0.2}
    text = _staging_reason("task 'tweets'", row, GateConfig(margin=0.0), "needs-approval")
    assert "-0.0" not in text
    assert "within the margin 0," in text
    assert "changed +0.000" in text


def test_a_margin_prints_as_the_lowest_change_it_accepts() -> None:
    row = {"delta": -0.2, "low": -0.3, "high": -0.1}
    text = _staging_reason("task 'tweets'", row, GateConfig(margin=0.05), "fail")
    assert "worse than the margin -0.05 " in text


def _approve_args(path: Path, key_file: str | None = None) -> argparse.Namespace:
    return argparse.Namespace(path=str(path), key_file=key_file)


def test_approving_a_staged_candidate_names_the_promote_command(tmp_path: Path) -> None:
    (tmp_path / "deployment.json").write_text("{}")
    (tmp_path / "pending.json").write_text("{}")
    assert (
        _after_approval(_approve_args(tmp_path, "k.key")) == f"rehearsal promote {tmp_path} --key-file k.key"
    )


def test_approving_a_blocked_update_names_the_update_command(tmp_path: Path) -> None:
    (tmp_path / "deployment.json").write_text("{}")
    assert _after_approval(_approve_args(tmp_path)).startswith(f"rehearsal update {tmp_path} --data FILE")


def test_init_deployment_says_how_many_entries_went_to_the_suite(
    tmp_path: Path, tiny_model: str, encoder: Any, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    keys = KeyRing.generate()
    monkeypatch.setenv("REHEARSAL_MASTER_KEY", keys.export_base64())
    tweets = load_sentiment_stream(max_train_per_class=6, max_test_per_class=1).tasks[0]
    with RehearsalMemory.create(tmp_path / "mem", keys=keys, encoder=encoder) as memory:
        memory.add(
            [e.text for e in tweets.train],
            metadata=[{"task": e.task, "label": e.label} for e in tweets.train],
        )
    config = json.dumps({"epochs": 1, "batch_size": 8, "max_length": 32, "max_labels": 8})
    argv = [
        "init-deployment",
        str(tmp_path / "dep"),
        "--memory",
        str(tmp_path / "mem"),
        "--model",
        tiny_model,
    ]
    capsys.readouterr()
    assert main([*argv, "--config", config]) == 0
    out = capsys.readouterr().out
    moved = int(out.split("regression suite: ")[1].split(" entries moved")[0])
    assert moved > 0
    assert f"{len(tweets.train) - moved} remain for training and replay" in out
