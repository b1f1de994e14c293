"""``is_finished``: what the benchmarks ask of a run folder, answered by the runner that writes it."""

from __future__ import annotations

import json
from pathlib import Path

from rehearsal.runner.state import STATE_FILE, is_finished


def _state(folder: Path, rows: object) -> Path:
    folder.mkdir()
    (folder / STATE_FILE).write_text(json.dumps({"accuracy": {"matrix": rows}}), encoding="utf-8")
    return folder


def test_a_run_is_finished_when_its_last_row_is_measured(tmp_path: Path) -> None:
    assert is_finished(_state(tmp_path / "done", [[0.5, None], [0.4, 0.7]]))
    assert not is_finished(_state(tmp_path / "half", [[0.5, None], [None, None]]))


def test_a_folder_without_a_readable_state_holds_no_finished_run(tmp_path: Path) -> None:
    assert not is_finished(tmp_path / "missing")
    assert not is_finished(_state(tmp_path / "empty", []))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / STATE_FILE).write_text("{not json", encoding="utf-8")
    assert not is_finished(bad)
