"""Every committed benchmark result says where it came from (issue 26): the commit it was measured at, the
command that regenerates it and the machine it ran on. The check is a function, so it is also run on small
files with the fault planted."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RESULT_FILES = sorted((ROOT / "benchmarks" / "results").glob("*.json"))
REQUIRED = ("commit", "command", "machine")
COMMIT = re.compile(r"[0-9a-f]{40}")  # a full hash; "+dirty" or a note may follow it
SCRIPT = re.compile(r"\b(?:benchmarks|scripts|examples|tests)/[\w/.-]+?\.py\b")


def _commands(value: object) -> list[str]:
    """A record's command: one string, a list of them (a bundle of runs), or a name per run."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [str(item) for item in value]
    if isinstance(value, dict):
        return [str(item) for item in value.values()]
    return [repr(value)]


def provenance_faults(path: Path, *, root: Path = ROOT) -> list[str]:
    """What ``path`` lacks to say where its figures came from; an empty list when nothing.

    A command must name a script that exists under ``root``, unless the record says in which commit that
    script was removed (``script_removed_in``): its figures then stand as history, not as a rerun.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return [f"{path.name}: not JSON ({exc})"]
    if not isinstance(data, dict):
        return [f"{path.name}: not a JSON object"]
    faults = [f"{path.name}: no {key!r}" for key in REQUIRED if key not in data]
    if "commit" in data and not COMMIT.match(str(data["commit"])):
        faults.append(f"{path.name}: commit {data['commit']!r} is not a full hash")
    for command in _commands(data.get("command")) if "command" in data else []:
        scripts = SCRIPT.findall(command)
        if not scripts:
            faults.append(f"{path.name}: command names no script: {command!r}")
        missing = [script for script in scripts if not (root / script).is_file()]
        if missing and "script_removed_in" not in data:
            faults.append(f"{path.name}: command names {', '.join(missing)}, which does not exist")
    return faults


def test_the_results_folder_holds_results() -> None:
    assert len(RESULT_FILES) >= 1


@pytest.mark.parametrize("path", RESULT_FILES, ids=lambda p: p.name)
def test_a_committed_result_names_its_commit_command_and_machine(path: Path) -> None:
    assert provenance_faults(path) == []


def _write(tmp_path: Path, record: object) -> Path:
    path = tmp_path / "planted.json"
    path.write_text(json.dumps(record), encoding="utf-8")
    return path


GOOD = {
    "commit": "0" * 40,
    "command": "python benchmarks/servers.py --n 100000",
    "machine": {"cores": 2},
}


def test_a_complete_record_has_no_fault(tmp_path: Path) -> None:
    assert provenance_faults(_write(tmp_path, GOOD)) == []


def test_a_result_without_commit_is_reported(tmp_path: Path) -> None:
    record = {key: value for key, value in GOOD.items() if key != "commit"}
    assert provenance_faults(_write(tmp_path, record)) == ["planted.json: no 'commit'"]


def test_a_commit_that_is_not_a_hash_is_reported(tmp_path: Path) -> None:
    (fault,) = provenance_faults(_write(tmp_path, {**GOOD, "commit": "unknown"}))
    assert "is not a full hash" in fault


def test_a_command_naming_a_missing_script_is_reported(tmp_path: Path) -> None:
    record = {**GOOD, "command": ["python benchmarks/servers.py", "python benchmarks/no_such_bench.py"]}
    assert provenance_faults(_write(tmp_path, record)) == [
        "planted.json: command names benchmarks/no_such_bench.py, which does not exist"
    ]


def test_a_command_naming_no_script_is_reported(tmp_path: Path) -> None:
    (fault,) = provenance_faults(_write(tmp_path, {**GOOD, "command": {"run": "make bench"}}))
    assert "command names no script" in fault


def test_a_removed_script_is_accepted_when_the_record_says_where_it_went(tmp_path: Path) -> None:
    record = {**GOOD, "command": "python benchmarks/gone.py", "script_removed_in": "1" * 40}
    assert provenance_faults(_write(tmp_path, record)) == []


def test_a_file_that_is_not_json_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "planted.json"
    path.write_text('{"commit": ', encoding="utf-8")
    (fault,) = provenance_faults(path)
    assert fault.startswith("planted.json: not JSON")
