"""`rehearsal compare`: methods x seeds on a user's own JSON-lines stream, one table and one plot."""

import json
from pathlib import Path

import pytest

from rehearsal.cli.main import main

pytestmark = pytest.mark.usefixtures("master_key")

# 2 tasks x 3 classes: as many labels as the tiny model's head.
_TOPICS = {
    "billing": {
        "refund": "money back for order",
        "invoice": "send the invoice copy for account",
        "charge": "why was my card charged twice for",
    },
    "shipping": {
        "late": "parcel has not arrived yet for",
        "address": "change the delivery address of",
        "damaged": "the box came broken and torn for",
    },
}


def _user_stream(path: Path) -> Path:
    """A stream whose columns are not called text/label/task: the config names them."""
    with path.open("w", encoding="utf-8") as fh:
        for domain, intents in _TOPICS.items():
            for intent, phrase in intents.items():
                for i in range(6):
                    row = {"utterance": f"{phrase} number {i}", "intent": intent, "domain": domain}
                    fh.write(json.dumps(row) + "\n")
    return path


def _config(tmp_path: Path, tiny_model: str) -> Path:
    config = {
        "model": tiny_model,
        "data": str(_user_stream(tmp_path / "stream.jsonl")),
        "text_field": "utterance",
        "label_field": "intent",
        "task_field": "domain",
        "batch_size": 8,
        "max_length": 16,
        "progress": False,
        "output_dir": str(tmp_path / "unused"),
    }
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps(config))
    return path


@pytest.mark.slow  # four runs: ~20 s of CPU
def test_compare_writes_one_table_and_one_plot_for_methods_by_seeds(tmp_path, tiny_model, capsys):
    config = _config(tmp_path, tiny_model)
    out = tmp_path / "sweep"
    argv = ["compare", str(config), "--methods", "naive,random", "--seeds", "0,1"]
    argv += ["--set", "replay.ratio=0.5", "--output-dir", str(out), "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)  # nothing but the report on stdout
    assert report["methods"] == ["naive", "random"]
    assert report["seeds"] == [0, 1]
    assert [(r["method"], r["seed"]) for r in report["runs"]] == [
        ("naive", 0),
        ("naive", 1),
        ("random", 0),
        ("random", 1),
    ]
    for method in ("naive", "random"):
        acc = report["table"][method]["average_accuracy"]
        assert acc["n"] == 2
        assert 0.0 <= acc["mean"] <= 1.0
        assert acc["sd"] is not None
        assert report["table"][method]["forgetting"]["n"] == 2
        for seed in (0, 1):
            assert (out / method / f"seed{seed}" / "results.json").is_file()
    assert report["config"]["replay"]["ratio"] == 0.5
    table = (out / "comparison.md").read_text()
    assert "| naive |" in table
    assert "| random |" in table
    assert "±" in table
    assert json.loads((out / "comparison.json").read_text())["table"] == report["table"]
    assert (out / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_checks_every_run_before_training_any(tmp_path, tiny_model, capsys, monkeypatch):
    monkeypatch.delenv("REHEARSAL_MASTER_KEY")
    config = _config(tmp_path, tiny_model)
    out = tmp_path / "sweep"
    assert main(["compare", str(config), "--methods", "naive,random", "--output-dir", str(out)]) == 1
    assert "keeps an encrypted memory" in capsys.readouterr().err
    assert not (out / "naive").exists()  # the memoryless run did not start either


def test_compare_rejects_an_unknown_method_in_one_line(tmp_path, tiny_model, capsys):
    config = _config(tmp_path, tiny_model)
    assert main(["compare", str(config), "--methods", "naive,replayy"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "replayy" in err


@pytest.mark.slow  # one run, three read-outs
def test_compare_reads_several_predictors_out_of_one_training(tmp_path, tiny_model, capsys):
    config = _config(tmp_path, tiny_model)
    out = tmp_path / "sweep"
    argv = ["compare", str(config), "--methods", "random", "--predictors", "head,ncm,lda"]
    assert main([*argv, "--output-dir", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["methods"] == ["random/head", "random/ncm", "random/lda"]
    assert [r["output_dir"] for r in report["runs"]] == ["random/seed0"] * 3  # one run folder, one training
    saved = json.loads((out / "random" / "seed0" / "results.json").read_text())
    assert saved["prediction"] == "head"
    assert sorted(saved["readouts"]) == ["lda", "ncm"]
    ncm = saved["readouts"]["ncm"]["summary"]["average_accuracy"]
    assert report["table"]["random/ncm"]["average_accuracy"]["mean"] == ncm
    assert "| random/lda |" in (out / "comparison.md").read_text()


def test_compare_rejects_an_unknown_predictor_in_one_line(tmp_path, tiny_model, capsys):
    config = _config(tmp_path, tiny_model)
    assert main(["compare", str(config), "--methods", "random", "--predictors", "head,nmc"]) == 1
    err = capsys.readouterr().err
    assert "'readouts' names unknown predictors ['nmc']" in err
    assert len(err.strip().splitlines()) == 1
