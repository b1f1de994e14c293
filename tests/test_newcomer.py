"""The first paths a new user takes, each once a silent or late failure (issue 15): CSV labels that never
replayed, columns dropped unless named, checks that fired after minutes of work, verbs that answered a
wrong path with "nothing recorded", a retried erasure that failed."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rehearsal.cli.main import KEY_ENV, main
from rehearsal.crypto.keys import KeyRing
from rehearsal.errors import ConfigError, MissingKeyError, NotFoundError
from rehearsal.runner.config import MEMORYLESS_METHODS, METHODS, REPLAY_METHODS, RunConfig
from rehearsal.runner.preflight import preflight

TEXTS = [
    "a domestic cat kept as a pet",
    "a large wild feline of the savanna",
    "move quickly on foot",
    "walk slowly and aimlessly",
    "an oak tree in the park",
    "to speak in a quiet voice",
]


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    value = KeyRing.generate().export_base64()
    monkeypatch.setenv(KEY_ENV, value)
    return value


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    status = main([*argv, "--json"])
    out, err = capsys.readouterr()
    return status, (json.loads(out) if out.strip() else None), err


def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def csv_memory(tmp_path: Path, key: str, capsys: pytest.CaptureFixture[str]) -> Path:
    """A memory ingested from a CSV whose labels arrive as strings, with no field named on the command."""
    data = write_csv(
        tmp_path / "data.csv",
        ["text", "label", "task"],
        [[t, str(i % 2), "animals" if i < 2 else "verbs"] for i, t in enumerate(TEXTS)],
    )
    status, report, err = cli(capsys, "ingest", str(tmp_path / "mem"), str(data), "--quiet")
    assert status == 0, err
    assert report["tasks"] == {"animals": 2, "verbs": 4}
    return tmp_path / "mem"


def test_csv_labels_arrive_as_ints_so_they_replay_and_filter(
    csv_memory: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rehearsal import RehearsalMemory

    with RehearsalMemory.open(csv_memory, keys=KeyRing.from_env(KEY_ENV), read_only=True) as memory:
        labels = {row.label for row in memory.entries(memory.ids()).values()}
    assert labels == {0, 1}
    status, found, err = cli(capsys, "search", str(csv_memory), "a cat", "-k", "6", "--where", '{"label": 0}')
    assert status == 0, err
    hits = found["results"][0]["hits"]
    assert len(hits) == 3
    assert {hit["metadata"]["label"] for hit in hits} == {0}


def test_ingest_takes_label_and_task_columns_by_default_and_renames_them(
    tmp_path: Path, key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_csv(
        tmp_path / "d.csv", ["body", "cls"], [[t, "pet" if i < 2 else "verb"] for i, t in enumerate(TEXTS)]
    )
    argv = ["ingest", str(tmp_path / "mem"), str(data), "--text-field", "body", "--quiet"]
    status, report, err = cli(capsys, *argv, "--label-field", "cls", "--task", "week-1")
    assert status == 0, err
    assert report["tasks"] == {"week-1": 6}
    assert report["distinct_labels"] == 2
    status, stats, _ = cli(capsys, "stats", str(tmp_path / "mem"))
    assert status == 0
    assert stats["tasks"] == {"week-1": 6}


def test_a_named_label_field_that_no_record_has_is_an_error_and_adds_nothing(
    tmp_path: Path, key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_csv(tmp_path / "d.csv", ["text", "label"], [[t, "0"] for t in TEXTS])
    status, _, err = cli(capsys, "ingest", str(tmp_path / "mem"), str(data), "--label-field", "class")
    assert status == 1
    assert "['class']" in err
    assert not (tmp_path / "mem").exists()


def test_an_unparseable_retain_until_is_refused_at_ingest(
    tmp_path: Path, key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [[t, "2030-01-01" if i else "next week"] for i, t in enumerate(TEXTS)]
    data = write_csv(tmp_path / "d.csv", ["text", "retain_until"], rows)
    argv = ["ingest", str(tmp_path / "mem"), str(data), "--metadata-fields", "retain_until"]
    status, _, err = cli(capsys, *argv)
    assert status == 1
    assert "d.csv row 1" in err
    assert "not an ISO date" in err
    assert not (tmp_path / "mem").exists()
    status, _, err = cli(capsys, "ingest", str(tmp_path / "mem"), str(data), "--retain-until", "soon")
    assert status == 1
    assert "not an ISO date" in err


def test_retain_until_from_the_command_line_expires_the_records(
    tmp_path: Path, key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_csv(tmp_path / "d.csv", ["text"], [[t] for t in TEXTS])
    argv = ["ingest", str(tmp_path / "mem"), str(data), "--retain-until", "2030-01-01", "--quiet"]
    assert cli(capsys, *argv)[0] == 0
    assert cli(capsys, "expire", str(tmp_path / "mem"), "--now", "2029-12-31")[1]["expired"] == []
    assert len(cli(capsys, "expire", str(tmp_path / "mem"), "--now", "2030-01-02")[1]["expired"]) == 6


def test_forgetting_a_tenant_twice_succeeds_the_second_time(
    csv_memory: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, first, _ = cli(capsys, "forget", str(csv_memory), "--tenant", "default")
    assert status == 0
    assert first["removed"] == 6
    status, again, err = cli(capsys, "forget", str(csv_memory), "--tenant", "default")
    assert status == 0, err
    assert again["removed"] == 0
    assert again["already_absent"] is True


def test_memory_verbs_accept_a_run_folder_and_fail_on_a_path_that_holds_nothing(
    csv_memory: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_folder = tmp_path / "run"
    run_folder.mkdir()
    csv_memory.rename(run_folder / "memory")
    (run_folder / "state.json").write_text("{}")
    status, stats, err = cli(capsys, "stats", str(run_folder))
    assert status == 0, err
    assert stats["entries"] == 6
    status, versions, err = cli(capsys, "versions", str(run_folder))
    assert status == 0, err
    assert versions["versions"] == []
    for path in (tmp_path / "typo", tmp_path):
        status, _, err = cli(capsys, "versions", str(path))
        assert status == 1
        assert "give a memory folder or a 'rehearsal run' output folder" in err
    status, _, err = cli(capsys, "approve", str(tmp_path / "typo"), "run-x/phase-1", "--approver", "a")
    assert status == 1
    assert "does not exist" in err


def test_approve_without_an_approver_is_a_usage_error(
    csv_memory: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = cli(capsys, "approve", str(csv_memory), "run-x/phase-1")
    assert status == 2
    assert "--approver" in err


def test_the_strategies_that_keep_a_memory_are_the_ones_the_config_says_need_a_key() -> None:
    from rehearsal.runner.strategies import get_strategy

    for method in METHODS:
        config = RunConfig(method=method)
        strategy = get_strategy(method)
        assert config.keeps_memory == strategy.uses_memory, method
        assert (method in REPLAY_METHODS) == strategy.class_means_from_memory, method
    assert set(MEMORYLESS_METHODS) <= set(METHODS)


def test_a_memoryless_run_needs_no_key_and_one_with_a_memory_says_how_to_give_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    assert preflight(RunConfig(method="naive"), output_dir=tmp_path / "a", resume=False).keys is None
    with pytest.raises(MissingKeyError, match="--key-file"):
        preflight(RunConfig(method="hybrid"), output_dir=tmp_path / "b", resume=False)
    keys = KeyRing.generate()
    checked = preflight(RunConfig(method="hybrid"), output_dir=tmp_path / "b", resume=False, keys=keys)
    assert checked.keys is keys
    assert "redacted" in repr(checked)


def test_a_folder_holding_a_run_and_a_missing_data_file_fail_before_anything_loads(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text(json.dumps({"config": RunConfig(method="naive", seed=1).to_dict()}))
    with pytest.raises(ConfigError, match="already holds a run"):
        preflight(RunConfig(method="naive"), output_dir=tmp_path, resume=False)
    with pytest.raises(ConfigError, match=r"different config; changed: \['seed'\]"):
        preflight(RunConfig(method="naive"), output_dir=tmp_path, resume=True)
    config = RunConfig(method="naive", data=str(tmp_path / "missing.jsonl"))
    with pytest.raises(NotFoundError, match=r"missing\.jsonl"):
        preflight(config, output_dir=tmp_path / "new", resume=False)


def test_rehearsal_run_without_a_key_fails_before_the_run_loop_is_imported(tmp_path: Path) -> None:
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"method": "hybrid", "output_dir": str(tmp_path / "out")}))
    probe = (
        "import sys; from rehearsal.cli.main import main; status = main(['run', sys.argv[1]]); "
        "print(status, 'rehearsal.runner.loop' in sys.modules, 'transformers' in sys.modules)"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != KEY_ENV}
    done = subprocess.run(
        [sys.executable, "-c", probe, str(config)], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.stdout.split() == ["1", "False", "False"], done.stderr
    assert "--key-file" in done.stderr
    assert not (tmp_path / "out").exists()


def test_the_callback_refuses_to_start_on_a_dataset_that_was_never_embedded(tmp_path: Path) -> None:
    from datasets import Dataset
    from transformers import TrainerControl, TrainerState, TrainingArguments

    import rehearsal as rh

    train = Dataset.from_dict({"text": TEXTS, "label": [0, 1, 0, 1, 0, 1]})
    collator = rh.RehearsalCollator(tmp_path / "mem", lambda rows: rows, tokenizer=None)
    callback = rh.RehearsalCallback(tmp_path / "mem", collator=collator, dataset=train)
    args = TrainingArguments(output_dir=str(tmp_path / "out"), remove_unused_columns=False, report_to=[])
    with pytest.raises(ConfigError, match=r"rh\.embed_dataset\(train, memory\.encoder\)"):
        callback.on_train_begin(args, TrainerState(), TrainerControl())


def test_expiry_goes_past_an_unreadable_retention_date_and_names_it(
    tmp_path: Path, key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from rehearsal import RehearsalMemory

    # Written through the Python API, which (unlike ingest) takes retain_until as opaque metadata.
    with RehearsalMemory.create(tmp_path / "mem", keys=KeyRing.from_env(KEY_ENV)) as memory:
        bad, old, _kept = memory.add(
            TEXTS[:3],
            metadata=[{"retain_until": "next week"}, {"retain_until": "2020-01-01"}, {}],
        )
    status, report, err = cli(capsys, "expire", str(tmp_path / "mem"), "--now", "2024-01-01")
    assert status == 0, err
    assert report["expired"] == [old]
    assert list(report["unreadable"]) == [str(bad)]
    assert "not an ISO date" in report["unreadable"][str(bad)]
    assert report["entries"] == 2
