"""A run with a memory seals its ``state.json`` under its master key; a resume checks the seal first. A run
without a memory has no key and keeps a plain state; a state from before sealing still resumes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rehearsal.crypto.keys import KeyRing
from rehearsal.errors import IntegrityError
from rehearsal.runner import state as run_state
from rehearsal.runner.config import RunConfig
from rehearsal.runner.metrics import AccuracyMatrix
from rehearsal.runner.preflight import preflight

MEMORY_RUN = RunConfig(method="hybrid")  # keeps a memory: has a master key
TOTALS = {"wall_seconds": 1.5, "phase_seconds": [1.5]}


def _write(out: Path, config: RunConfig, keys: KeyRing | None) -> None:
    matrix = AccuracyMatrix(["living", "verbs"])
    matrix.record(0, 0, 0.75)
    correct = {"living": np.array([1, 0, 1])}
    weights = out / "weights" / "phase_0"
    config = config.replace(output_dir=str(out))
    run_state.write_state(out, config, 1, weights, matrix, correct, 7, TOTALS, keys=keys)


def _saved(out: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((out / "state.json").read_text(encoding="utf-8"))
    return data


def test_a_run_with_a_memory_seals_its_state_and_resumes_from_it(tmp_path: Path) -> None:
    keys = KeyRing.generate()
    _write(tmp_path, MEMORY_RUN, keys)
    assert isinstance(_saved(tmp_path)["tag"], str)
    checked = preflight(MEMORY_RUN, output_dir=tmp_path, resume=True, keys=keys)
    assert checked.state is not None
    assert checked.state["completed_phases"] == 1
    assert checked.state["correct"] == {"living": [1, 0, 1]}
    assert "tag" not in checked.state


@pytest.mark.parametrize(
    ("field", "value"),
    [("completed_phases", 2), ("memory_generation", 3), ("checkpoint", "weights/elsewhere")],
)
def test_an_edited_state_is_refused_on_resume(tmp_path: Path, field: str, value: object) -> None:
    keys = KeyRing.generate()
    _write(tmp_path, MEMORY_RUN, keys)
    edited = {**_saved(tmp_path), field: value}
    (tmp_path / "state.json").write_text(json.dumps(edited), encoding="utf-8")
    with pytest.raises(IntegrityError, match=r"state\.json' fails its check \(edited") as caught:
        preflight(MEMORY_RUN, output_dir=tmp_path, resume=True, keys=keys)
    assert "\n" not in str(caught.value)


def test_an_edited_accuracy_is_refused(tmp_path: Path) -> None:
    keys = KeyRing.generate()
    _write(tmp_path, MEMORY_RUN, keys)
    edited = _saved(tmp_path)
    edited["accuracy"]["matrix"][0][0] = 0.99  # type: ignore[index]
    (tmp_path / "state.json").write_text(json.dumps(edited), encoding="utf-8")
    with pytest.raises(IntegrityError, match="fails its check"):
        run_state.load_state(tmp_path, MEMORY_RUN.replace(output_dir=str(tmp_path)), resume=True, keys=keys)


def test_a_state_sealed_under_another_key_is_refused(tmp_path: Path) -> None:
    _write(tmp_path, MEMORY_RUN, KeyRing.generate())
    with pytest.raises(IntegrityError, match="another key"):
        preflight(MEMORY_RUN, output_dir=tmp_path, resume=True, keys=KeyRing.generate())


def test_a_sealed_state_is_not_read_without_a_key(tmp_path: Path) -> None:
    _write(tmp_path, MEMORY_RUN, KeyRing.generate())
    with pytest.raises(IntegrityError, match="needs its run's master key"):
        run_state.read_state(tmp_path, None)


def test_a_state_written_before_sealing_still_resumes(tmp_path: Path) -> None:
    # A version-1 run folder: the state as rehearsal wrote it before states were sealed (no tag).
    _write(tmp_path, MEMORY_RUN, None)
    assert "tag" not in _saved(tmp_path)
    keys = KeyRing.generate()
    checked = preflight(MEMORY_RUN, output_dir=tmp_path, resume=True, keys=keys)
    assert checked.state is not None
    assert checked.state["memory_generation"] == 7


def test_a_run_without_a_memory_keeps_a_plain_state(tmp_path: Path) -> None:
    naive = RunConfig(method="naive")
    checked = preflight(naive, output_dir=tmp_path, resume=False)
    assert checked.keys is None  # no memory, no master key: nothing to seal with
    _write(tmp_path, naive, checked.keys)
    assert "tag" not in _saved(tmp_path)
    resumed = preflight(naive, output_dir=tmp_path, resume=True)
    assert resumed.state is not None
    assert resumed.state["completed_phases"] == 1
