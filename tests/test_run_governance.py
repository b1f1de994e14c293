"""Governed runs: each phase of a run with a memory is gated (when configured), versioned and audited.

Runs use the tiny BERT and the two-task WordNet stream of conftest.py with a real encrypted memory and a
real HMAC-chained audit log. The regression test injects its fault (a collapsed accuracy) by replacing
the evaluation; the approval test puts a real e-mail address into the second task's training data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _models import tiny_run_config

from rehearsal.cli.main import main as cli_main
from rehearsal.crypto.keys import KeyRing
from rehearsal.errors import ConfigError, NotFoundError, UpdateBlockedError
from rehearsal.governance.audit_log import AuditLog, default_log_path
from rehearsal.governance.audited import config_digest
from rehearsal.governance.gate import GateConfig
from rehearsal.governance.updates import run_id_for, update_id
from rehearsal.governance.versions import list_versions, rollback
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.runner import loop as stream_module
from rehearsal.runner import state as run_state
from rehearsal.runner.tasks import Example, Task, TaskStream

pytestmark = pytest.mark.usefixtures("master_key")


def _keys() -> KeyRing:
    return KeyRing.from_env("REHEARSAL_MASTER_KEY")


def _log(out: Path) -> AuditLog:
    return AuditLog.open(default_log_path(out / "memory"), _keys(), create=False)


def _updates(out: Path) -> list[dict[str, Any]]:
    return [e.details for e in _log(out).entries() if e.kind == "train-update"]


def _task_ids(out: Path, task: str) -> list[int]:
    with RehearsalMemory.open(out / "memory", keys=_keys(), read_only=True) as memory:
        return memory.ids({"task": task})


@pytest.mark.slow
def test_every_update_of_a_run_is_versioned_and_audited(
    tmp_path: Path, tiny_model: str, tiny_stream: TaskStream
) -> None:
    config = tiny_run_config(tmp_path, tiny_model, method="hybrid")
    stream_module.run(config, stream=tiny_stream)
    out = tmp_path / "run"
    versions, current = list_versions(out / "memory")
    assert [v.version for v in versions] == [1, 2]
    assert current == 2
    assert [v.weights for v in versions] == [str((out / "weights" / f"phase_{p}").resolve()) for p in (0, 1)]
    assert all(Path(v.weights, "model.safetensors").is_file() for v in versions)  # each stays restorable
    assert _log(out).verify() == len(_log(out).entries())
    run_id = run_id_for(run_state.comparable(config))
    updates = _updates(out)
    assert [u["run_id"] for u in updates] == [update_id(run_id, 0), update_id(run_id, 1)]
    assert [u["decision"] for u in updates] == ["ungated", "ungated"]
    assert [u["version"] for u in updates] == [1, 2]
    assert [u["data_count"] for u in updates] == [len(t.train) for t in tiny_stream.tasks]
    assert {u["config_hash"] for u in updates} == {config_digest(run_state.comparable(config))}
    assert set(updates[1]["metrics"]) == {f"accuracy/{t.name}" for t in tiny_stream.tasks}
    kinds = [e.kind for e in _log(out).entries()]
    assert kinds.count("ingest") == 2
    raw = default_log_path(out / "memory").read_bytes()
    assert not any(ex.text.encode() in raw for t in tiny_stream.tasks for ex in t.train)  # no raw text

    first_task = _task_ids(out, tiny_stream.tasks[0].name)
    with RehearsalMemory.open(out / "memory", keys=_keys()) as memory:
        result = rollback(memory, 1)
        assert sorted(memory.ids()) == sorted(first_task)
    assert result.exact
    assert result.weights == versions[0].weights


@pytest.mark.slow
def test_a_regression_blocks_the_update_and_takes_its_data_back_out(
    tmp_path: Path, tiny_model: str, tiny_stream: TaskStream, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = tiny_stream.tasks[0]
    # The injected fault: every answer right after phase 0, every answer on the first task wrong after 1.
    monkeypatch.setattr(stream_module, "_task_correct", _scripted_eval({0: 1.0, 1: 0.0}, first.name))
    config = tiny_run_config(tmp_path, tiny_model, method="hybrid", gate=GateConfig(max_drop=0.05))
    with pytest.raises(UpdateBlockedError, match="fail") as blocked:
        stream_module.run(config, stream=tiny_stream)
    assert blocked.value.decision == "fail"
    assert any(repr(first.name) in reason for reason in blocked.value.reasons)
    out = tmp_path / "run"
    assert json.loads((out / "state.json").read_text())["completed_phases"] == 1
    assert _task_ids(out, tiny_stream.tasks[1].name) == []  # the blocked phase's data left the memory
    assert len(_task_ids(out, first.name)) == len(first.train)
    versions, current = list_versions(out / "memory")
    assert [v.version for v in versions] == [1]
    assert current == 1
    updates = _updates(out)
    assert [u["decision"] for u in updates] == ["pass", "fail"]
    assert updates[1]["version"] is None
    assert updates[1]["reasons"] == [f"regression:{first.name}"]
    assert _log(out).verify() == len(_log(out).entries())


def _scripted_eval(share_right: dict[int, float], task_name: str) -> Any:
    """An evaluation that gets ``share_right[phase]`` of ``task_name``'s test examples right (the first
    ones) and every example of the other tasks."""

    def evaluate(strategy: Any, model: Any, ctx: Any, task: Task) -> dict[str, np.ndarray]:
        right = np.ones(len(task.test))
        if task.name == task_name:
            right[round(share_right[ctx.phase] * len(right)) :] = 0.0
        return {"head": right, ctx.config.prediction: right}

    return evaluate


@pytest.mark.slow
def test_staging_blocks_an_update_whose_interval_falls_below_the_margin(
    tmp_path: Path, tiny_model: str, tiny_stream: TaskStream, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = tiny_stream.tasks[0]
    monkeypatch.setattr(stream_module, "_task_correct", _scripted_eval({0: 1.0, 1: 0.5}, first.name))
    # The regression suite allows any drop; staging alone must catch this one.
    config = tiny_run_config(tmp_path, tiny_model, method="hybrid", gate=GateConfig(max_drop=1.0, margin=0.1))
    with pytest.raises(UpdateBlockedError) as blocked:
        stream_module.run(config, stream=tiny_stream)
    assert blocked.value.decision == "fail"
    assert any(reason.startswith(f"staging: task {first.name!r}") for reason in blocked.value.reasons)
    last = _updates(tmp_path / "run")[-1]
    assert last["reasons"] == [f"staging:{first.name}"]
    staged = last["staging"][first.name]
    assert (staged["current"], staged["candidate"], staged["delta"]) == (1.0, 0.5, -0.5)
    assert staged["high"] < -0.1


@pytest.mark.slow
def test_staging_promotes_an_update_within_the_margin(
    tmp_path: Path, tiny_model: str, tiny_stream: TaskStream, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = tiny_stream.tasks[0]
    monkeypatch.setattr(stream_module, "_task_correct", _scripted_eval({0: 1.0, 1: 1.0}, first.name))
    config = tiny_run_config(tmp_path, tiny_model, method="hybrid", gate=GateConfig(max_drop=0.0, margin=0.0))
    stream_module.run(config, stream=tiny_stream)
    updates = _updates(tmp_path / "run")
    assert [u["decision"] for u in updates] == ["pass", "pass"]
    assert updates[0]["staging"] is None  # nothing trained before phase 0 to compare on
    assert updates[1]["staging"][first.name]["delta"] == 0.0


def _stream_with_an_email(
    stream: TaskStream, task: int = 1, address: str = "jane.doe@example.com"
) -> TaskStream:
    """``stream`` with the first training text of task ``task`` replaced by one holding an e-mail."""
    tasks = list(stream.tasks)
    old = tasks[task]
    leaked = Example(f"write to {address} about it", old.train[0].label, old.name)
    tasks[task] = Task.from_examples(old.name, (leaked, *old.train[1:]), old.test)
    return TaskStream.from_tasks(tasks)


def _renamed(stream: TaskStream, names: list[str]) -> TaskStream:
    def move(examples: tuple[Example, ...], name: str) -> list[Example]:
        return [Example(ex.text, ex.label, name) for ex in examples]

    return TaskStream.from_tasks(
        Task.from_examples(name, move(t.train, name), move(t.test, name))
        for t, name in zip(stream.tasks, names, strict=True)
    )


@pytest.mark.slow
def test_a_flagged_first_phase_keeps_its_log_and_ships_once_approved_for_that_data(
    tmp_path: Path, tiny_model: str, tiny_stream: TaskStream, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tiny_run_config(tmp_path, tiny_model, method="hybrid", gate=GateConfig(max_drop=1.0, margin=1.0))
    out, memory = tmp_path / "run", str(tmp_path / "run" / "memory")
    uid = update_id(run_id_for(run_state.comparable(config)), 0)
    with pytest.raises(UpdateBlockedError):
        stream_module.run(config, stream=_stream_with_an_email(tiny_stream, task=0))
    assert cli_main(["approve", memory, uid, "--approver", "alice"]) == 0
    # The data changes before the resume: the approval was for the other data, so it does not carry over.
    other = _stream_with_an_email(tiny_stream, task=0, address="john.roe@example.org")
    with pytest.raises(UpdateBlockedError):
        stream_module.run(config, stream=other, resume=True)
    assert cli_main(["approve", memory, uid, "--approver", "bob"]) == 0
    capsys.readouterr()
    stream_module.run(config, stream=other, resume=True)
    updates = _updates(out)
    assert [(u["decision"], u["approver"]) for u in updates] == [
        ("needs-approval", None),
        ("needs-approval", None),
        ("pass", "bob"),
        ("pass", None),
    ]
    assert _log(out).verify() == len(_log(out).entries())  # the log survived both resumes


@pytest.mark.slow
def test_task_names_the_log_would_refuse_are_logged_as_digests(
    tmp_path: Path, tiny_model: str, tiny_stream: TaskStream
) -> None:
    stream = _renamed(tiny_stream, ["living things", "verbs & actions"])
    gate = GateConfig(max_drop=1.0, margin=1.0)
    config = tiny_run_config(tmp_path, tiny_model, method="lora-routed", tasks=None, gate=gate)
    stream_module.run(config, stream=stream)
    ingests = [e.details for e in _log(tmp_path / "run").entries() if e.kind == "ingest"]
    assert [i["tags"][0].startswith("task:sha256:") for i in ingests] == [True, True]
    assert b"living things" not in default_log_path(tmp_path / "run" / "memory").read_bytes()


@pytest.mark.slow
def test_personal_data_waits_for_an_approver_then_ships(
    tmp_path: Path, tiny_model: str, tiny_stream: TaskStream, capsys: pytest.CaptureFixture[str]
) -> None:
    stream = _stream_with_an_email(tiny_stream)
    gate = GateConfig(max_drop=1.0, margin=1.0)  # regression and staging let anything through
    config = tiny_run_config(tmp_path, tiny_model, method="hybrid", gate=gate)
    with pytest.raises(UpdateBlockedError) as blocked:
        stream_module.run(config, stream=stream)
    assert blocked.value.decision == "needs-approval"
    assert "jane" not in str(blocked.value)  # reasons name PII kinds, never the text
    out = tmp_path / "run"
    uid = update_id(run_id_for(run_state.comparable(config)), 1)
    assert cli_main(["approve", str(out / "memory"), "nobody/phase-9", "--approver", "alice"]) == 1
    assert cli_main(["approve", str(out / "memory"), uid, "--approver", "alice"]) == 0
    capsys.readouterr()

    stream_module.run(config, stream=stream, resume=True)
    last = _updates(out)[-1]
    assert (last["run_id"], last["decision"], last["approver"], last["version"]) == (uid, "pass", "alice", 2)
    assert last["reasons"] == ["pii-in-replay:email"]  # what the approver accepted
    assert len(_task_ids(out, stream.tasks[1].name)) == len(stream.tasks[1].train)


def test_a_gate_on_a_method_without_a_memory_is_refused(tmp_path: Path, tiny_model: str) -> None:
    from rehearsal.errors import ConfigError

    config = tiny_run_config(tmp_path, tiny_model, method="naive", gate=GateConfig())
    with pytest.raises(ConfigError, match="keeps none"):
        stream_module.run(config)
    assert not (tmp_path / "run" / "state.json").exists()


@pytest.mark.slow
def test_rehearsal_run_exits_3_while_an_update_awaits_approval(
    tmp_path: Path, tiny_model: str, tiny_stream: TaskStream, capsys: pytest.CaptureFixture[str]
) -> None:
    stream = _stream_with_an_email(tiny_stream)
    data = tmp_path / "stream.jsonl"
    rows = [
        {"text": ex.text, "label": ex.label, "task": ex.task, "split": split}
        for task in stream.tasks
        for split, examples in (("train", task.train), ("test", task.test))
        for ex in examples
    ]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = tmp_path / "run.json"
    settings = tiny_run_config(tmp_path, tiny_model, method="hybrid", tasks=None, data=str(data)).to_dict()
    settings["gate"] = {"max_drop": 1.0, "margin": 1.0}
    config.write_text(json.dumps(settings))
    assert cli_main(["run", str(config)]) == 3
    out = capsys.readouterr().out
    assert "needs-approval" in out
    log = _log(tmp_path / "run")
    uid = [e.details["run_id"] for e in log.entries() if e.kind == "train-update"][-1]
    # The message prints the command that approves it, naming the run folder; that command works as printed.
    printed = [line.split() for line in out.splitlines() if line.strip().startswith("rehearsal approve")]
    assert printed == [["rehearsal", "approve", str(tmp_path / "run"), uid, "--approver", "NAME"]]
    assert cli_main([*printed[0][1:-1], "alice"]) == 0
    capsys.readouterr()
    assert cli_main(["run", str(config), "--resume", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["summary"]["average_accuracy"] is not None
    assert [(u["decision"], u["approver"]) for u in _updates(tmp_path / "run")][-1] == ("pass", "alice")


@pytest.mark.slow
def test_a_version_recorded_by_a_run_that_died_before_its_state_is_withdrawn_on_resume(
    tmp_path: Path, tiny_model: str, tiny_stream: TaskStream, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = run_state.write_state

    def dying_write(out: Path, config: Any, completed: int, *args: Any, **kwargs: Any) -> None:
        if completed == 2:
            raise KeyboardInterrupt  # phase 1 was promoted and versioned; its state never got written
        real_write(out, config, completed, *args, **kwargs)

    config = tiny_run_config(tmp_path, tiny_model, method="hybrid")
    monkeypatch.setattr(run_state, "write_state", dying_write)
    with pytest.raises(KeyboardInterrupt):
        stream_module.run(config, stream=tiny_stream)
    monkeypatch.setattr(run_state, "write_state", real_write)
    stream_module.run(config, stream=tiny_stream, resume=True)
    out = tmp_path / "run"
    versions, current = list_versions(out / "memory")
    assert [(v.version, v.withdrawn) for v in versions] == [(1, False), (2, True), (3, False)]
    assert current == 3
    assert versions[1].update == versions[2].update  # the same phase, trained again
    with (
        pytest.raises(NotFoundError, match="withdrawn"),
        RehearsalMemory.open(out / "memory", keys=_keys()) as m,
    ):
        rollback(m, 2)
    kinds = [e.kind for e in _log(out).entries()]
    assert kinds.count("withdraw") == 1
    assert _log(out).verify() == len(kinds)
    with RehearsalMemory.open(out / "memory", keys=_keys(), read_only=True) as memory:
        assert len(memory) == sum(len(t.train) for t in tiny_stream.tasks)  # nothing admitted twice


@pytest.mark.slow
def test_keep_weights_prunes_old_versions_weights_but_not_their_memory_state(
    tmp_path: Path, tiny_model: str, tiny_stream: TaskStream, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tiny_run_config(tmp_path, tiny_model, method="hybrid", keep_weights=1)
    stream_module.run(config, stream=tiny_stream)
    out = tmp_path / "run"
    assert sorted(p.name for p in (out / "weights").iterdir()) == ["phase_1"]
    memory = str(out / "memory")
    assert cli_main(["versions", memory]) == 0
    assert "(weights missing" in capsys.readouterr().out.splitlines()[0]
    assert cli_main(["rollback", memory, "1"]) == 0
    assert "the memory is restored, the model is not" in capsys.readouterr().out
    with RehearsalMemory.open(out / "memory", keys=_keys(), read_only=True) as m:
        assert len(m) == len(tiny_stream.tasks[0].train)


@pytest.mark.slow
def test_a_blocked_updates_evictions_are_logged(
    tmp_path: Path, tiny_model: str, tiny_stream: TaskStream, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = tiny_stream.tasks[0]
    monkeypatch.setattr(stream_module, "_task_correct", _scripted_eval({0: 1.0, 1: 0.0}, first.name))
    capacity = len(first.train) - 4  # full after phase 0, so phase 1's admissions evict residents
    config = tiny_run_config(
        tmp_path,
        tiny_model,
        method="hybrid",
        policy="reservoir",
        memory_capacity=capacity,
        gate=GateConfig(max_drop=0.05),
    )
    with pytest.raises(UpdateBlockedError):
        stream_module.run(config, stream=tiny_stream)
    log = _log(tmp_path / "run")
    kinds = [(e.kind, e.details.get("decision") or e.details.get("cause")) for e in log.entries()]
    blocked = kinds.index(("train-update", "fail"))
    # Erased residents stay erased, and the log says so, right after the blocked update's own entry.
    assert kinds[blocked + 1] == ("delete", "eviction")
    assert kinds[blocked + 2] == ("delete", "blocked-update")
    assert log.verify() == len(kinds)


@pytest.mark.slow
def test_resuming_a_run_whose_memory_was_rolled_back_says_what_happened(
    tmp_path: Path, tiny_model: str, tiny_stream: TaskStream, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tiny_run_config(tmp_path, tiny_model, method="hybrid")
    stream_module.run(config, stream=tiny_stream)
    out = tmp_path / "run"
    assert cli_main(["rollback", str(out), "1"]) == 0
    capsys.readouterr()
    # Before the fix, --resume printed the finished run's results while the memory held phase 0's state.
    with pytest.raises(ConfigError, match=r"rolled back to v1 .*phase-0.* after this run finished phase 1"):
        stream_module.run(config, stream=tiny_stream, resume=True)


@pytest.mark.slow
def test_a_moved_run_folder_still_finds_every_versions_weights(
    tmp_path: Path, tiny_model: str, tiny_stream: TaskStream
) -> None:
    config = tiny_run_config(tmp_path, tiny_model, method="hybrid")
    stream_module.run(config, stream=tiny_stream)
    moved = tmp_path / "elsewhere" / "run"
    moved.parent.mkdir()
    (tmp_path / "run").rename(moved)
    versions, _ = list_versions(moved / "memory")
    assert [Path(v.weights) for v in versions] == [moved / "weights" / f"phase_{p}" for p in (0, 1)]
    assert all(Path(v.weights).is_dir() for v in versions)
    with RehearsalMemory.open(moved / "memory", keys=_keys()) as memory:
        assert Path(rollback(memory, 1).weights) == moved / "weights" / "phase_0"
