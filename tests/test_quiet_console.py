"""What ``rehearsal run`` prints (issue 29): one line per phase, no load reports or nested bars unless
``--verbose``; a misnamed field fails before any model loads, listing the file's columns."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from _models import tiny_run_config

from rehearsal.cli.main import main
from rehearsal.errors import ConfigError
from rehearsal.runner.preflight import preflight


def _run(tmp_path: Path, tiny_model: str, tiny_stream: Any, capfd: Any, *extra: str) -> str:
    """``rehearsal run`` in this process on the tiny stream (6 labels, as the tiny model's head); its
    stderr as a terminal would show it (file descriptor 2, where logging and tqdm write)."""
    data = tmp_path / "stream.jsonl"
    rows = [
        {"text": e.text, "label": e.label, "task": t.name, "split": split}
        for t in tiny_stream.tasks
        for split, examples in (("train", t.train), ("test", t.test))
        for e in examples
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = tiny_run_config(tmp_path, tiny_model, method="naive", progress=True, data=str(data), tasks=None)
    path = tmp_path / "run.json"
    config.save(path)
    capfd.readouterr()
    assert main(["run", str(path), *extra]) == 0
    return str(capfd.readouterr().err)


def test_run_prints_one_line_per_phase_and_no_load_reports_or_bars(tmp_path, tiny_model, tiny_stream, capfd):
    err = _run(tmp_path, tiny_model, tiny_stream, capfd)
    assert "\x1b[" not in err
    assert "\r" not in err  # no bars redrawn in place
    assert "newly initialized" not in err
    assert "Loading weights" not in err
    phases = [line for line in err.splitlines() if line.startswith("phase ")]
    assert [line.split(" (")[0] for line in phases] == ["phase 1", "phase 2"]
    assert all("loss " in line and "replayed 0" in line for line in phases)


def test_run_verbose_restores_the_bars(tmp_path, tiny_model, tiny_stream, capfd):
    err = _run(tmp_path, tiny_model, tiny_stream, capfd, "--verbose")
    assert "\r" in err  # tqdm redraws its bars
    assert "naive phases" in err


def test_a_misnamed_field_fails_in_preflight_listing_the_files_columns(tmp_path, tiny_model) -> None:
    data = tmp_path / "packages.csv"
    with data.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["description", "section", "task"])
        writer.writerow(["a text editor", "editors", "tools"])
    config = tiny_run_config(tmp_path, tiny_model, data=str(data), tasks=None, label_field="section")
    with pytest.raises(
        ConfigError, match=r"text_field 'text' is not a column of packages\.csv.*'description'"
    ):
        preflight(config, output_dir=tmp_path / "out", resume=False)


def test_compare_warns_when_the_test_sets_cannot_separate_methods() -> None:
    from rehearsal.cli.run_verbs import small_test_warning
    from rehearsal.runner.config import RunConfig

    warning = small_test_warning(RunConfig(tasks=["living", "verbs"], max_test_per_class=2))
    assert warning is not None
    assert "('living') has 10 examples" in warning
    assert "under about 0.44" in warning


def test_compare_says_nothing_of_test_sets_large_enough() -> None:
    from rehearsal.cli.run_verbs import small_test_warning
    from rehearsal.runner.config import RunConfig

    assert small_test_warning(RunConfig(tasks=["living", "verbs"], max_test_per_class=80)) is None
