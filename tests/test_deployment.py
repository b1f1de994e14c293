"""Deployments (issue 16): governed updates with rollback, expert growth by novelty, shadow and canary.

A tiny BERT (conftest ``tiny_model``) keeps training to seconds; the memory and its encoder are real
(MiniLM, encrypted SQLite + FAISS), and the text is the bundled sentiment stream.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rehearsal.cli.main import main
from rehearsal.crypto.keys import KeyRing
from rehearsal.deployment.folder import Deployment
from rehearsal.deployment.init import init_deployment
from rehearsal.deployment.shadow import canary_arm, shadow
from rehearsal.deployment.update import promote, rollback, update
from rehearsal.errors import UpdateBlockedError, ValidationError
from rehearsal.governance.audit_log import AuditLog, default_log_path
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.runner.sentiment import load_sentiment_stream
from rehearsal.runner.tasks import Example

# The tiny model learns little of a new task from a few rows; what these tests are about is not that
# (tests/test_deployment_live_gate.py covers the learning check).
FAST = {
    "epochs": 8,
    "learning_rate": 5e-3,
    "batch_size": 8,
    "max_length": 32,
    "max_labels": 8,
    "check_learning": False,
}


def _write(path: Path, examples: list[Example], *, labels: dict[str, str] | None = None) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for ex in examples:
            label = (labels or {}).get(ex.label, ex.label)
            tags = ["safety"] if ex.label == "negative" else []
            fh.write(json.dumps({"text": ex.text, "label": label, "task": ex.task, "tags": tags}) + "\n")
    return path


def _memory(path: Path, keys: KeyRing, encoder: Any, examples: list[Example]) -> Path:
    with RehearsalMemory.create(path, keys=keys, encoder=encoder) as memory:
        memory.add(
            [e.text for e in examples], metadata=[{"task": e.task, "label": e.label} for e in examples]
        )
    return path


def _decisions(dep: Path, keys: KeyRing) -> list[tuple[str, str]]:
    log = AuditLog.open(default_log_path(dep / "memory"), keys, create=False)
    log.verify()
    return [(e.details["run_id"], e.details["decision"]) for e in log.entries() if e.kind == "train-update"]


@pytest.mark.slow
def test_three_updates_the_planted_regression_is_blocked_and_rolled_back(
    tmp_path: Path, tiny_model: str, encoder: Any
) -> None:
    keys = KeyRing.generate()
    stream = load_sentiment_stream(max_train_per_class=4, max_test_per_class=2)
    tweets, movies, products, editorials = stream.tasks
    # The suite is the memory's own tweets and movies, so v1 knows them well and a regression shows.
    old = [*tweets.train, *movies.train]
    _memory(tmp_path / "mem", keys, encoder, old)
    suite = _write(tmp_path / "suite.jsonl", old)
    options = {**FAST, "gate": {"max_drop": 0.25, "margin": 1.0}}
    dep = tmp_path / "dep"
    first = init_deployment(
        dep, memory=tmp_path / "mem", model=tiny_model, suite=suite, keys=keys, options=options
    )
    assert first.version is not None
    # 1: a new domain, with replay: passes.
    one = update(dep, _write(tmp_path / "products.jsonl", list(products.train)), keys=keys)
    assert one.decision == "pass"
    assert one.version == first.version + 1
    # 2: the planted regression is the data, trained for real: a batch of the old tweets that a broken
    # labelling job marked "spam" (a new label). The candidate learns to answer "spam" and loses the
    # other old tasks (the tweets are the update's own task, which the gate does not hold to its past):
    # blocked, its data taken back out of the memory.
    assert first.metrics["accuracy"]["tweets"] > 0.25, first.metrics
    with Deployment.open(dep, keys).open_memory(read_only=True) as memory:
        entries_before = len(memory)
    spam = {label: "spam" for label in stream.labels}
    bad = _write(tmp_path / "bad.jsonl", [*tweets.train, *tweets.test], labels=spam)
    with pytest.raises(UpdateBlockedError, match="regression: task 'movies' accuracy fell"):
        update(dep, bad, keys=keys)
    with Deployment.open(dep, keys).open_memory(read_only=True) as memory:
        assert len(memory) == entries_before
    assert Deployment.open(dep, keys).current()[0].version == one.version
    # ... and the deployment is rolled back to the version before the good update, then forward again.
    assert rollback(dep, first.version, keys=keys)["version"] == first.version
    assert Deployment.open(dep, keys).current()[0].version == first.version
    # 3: a further new domain: promotes.
    three = update(dep, _write(tmp_path / "editorials.jsonl", list(editorials.train)), keys=keys)
    assert three.decision == "pass"
    assert three.version == one.version + 1
    decisions = _decisions(dep, keys)
    assert [d for _, d in decisions] == ["ungated", "pass", "fail", "pass"]
    assert decisions[2][0].startswith("update-")
    log = AuditLog.open(default_log_path(dep / "memory"), keys, create=False)
    assert any(e.kind == "rollback" for e in log.entries())


@pytest.mark.slow
def test_expert_growth_grows_on_a_held_back_domain_and_not_on_a_known_one(
    tmp_path: Path, tiny_model: str, encoder: Any
) -> None:
    keys = KeyRing.generate()
    stream = load_sentiment_stream(max_train_per_class=30, max_test_per_class=2)
    tweets, movies, products, editorials = stream.tasks
    known = [ex for task in (tweets, movies, products) for ex in task.train[:60]]
    _memory(tmp_path / "mem", keys, encoder, known)
    dep = tmp_path / "dep"
    options = {**FAST, "epochs": 1, "gate": {"max_drop": 1.0, "margin": 1.0}}
    init_deployment(
        dep, memory=tmp_path / "mem", model=tiny_model, strategy="expert-growth", keys=keys, options=options
    )
    more = update(dep, _write(tmp_path / "more.jsonl", list(tweets.train[60:])), keys=keys)
    assert more.novelty is not None
    assert more.novelty["decision"] == "existing-expert", more.novelty
    assert more.expert == "expert_0"
    known_only = Path(Deployment.open(dep, keys).current()[0].weights)
    new = update(dep, _write(tmp_path / "new.jsonl", list(editorials.train[:40])), keys=keys)
    assert not _adapter_changed(known_only, Path(Deployment.open(dep, keys).current()[0].weights), "expert_0")
    assert new.novelty is not None
    assert new.novelty["decision"] == "new-expert", new.novelty
    assert new.novelty["score"] > new.novelty["threshold"] > more.novelty["score"]
    state = Deployment.open(dep, keys).current()[1]
    assert state.experts["expert_1"] == ["editorials"]
    assert "tweets" in state.experts["expert_0"]
    log = AuditLog.open(default_log_path(dep / "memory"), keys, create=False)
    logged = [e.details for e in log.entries() if e.kind == "novelty"]
    assert [d["decision"] for d in logged] == ["existing-expert", "new-expert"]
    assert logged[1]["score"] == pytest.approx(new.novelty["score"])
    # A known batch mixing two experts' tasks: each part trains its own expert, the other stays put.
    before = Path(Deployment.open(dep, keys).current()[0].weights)
    mixed = update(
        dep, _write(tmp_path / "mixed.jsonl", [*movies.train[60:75], *editorials.train[40:55]]), keys=keys
    )
    assert mixed.novelty is not None
    assert mixed.novelty["decision"] == "existing-expert", mixed.novelty
    assert mixed.novelty["experts"] == {"expert_0": ["movies"], "expert_1": ["editorials"]}
    after = Path(Deployment.open(dep, keys).current()[0].weights)
    assert _adapter_changed(before, after, "expert_0")
    assert _adapter_changed(before, after, "expert_1")
    state = Deployment.open(dep, keys).current()[1]
    assert state.experts["expert_1"] == ["editorials"]


def _adapter_changed(before: Path, after: Path, name: str) -> bool:
    import torch
    from safetensors.torch import load_file

    old = load_file(str(before / name / "adapter_model.safetensors"))
    new = load_file(str(after / name / "adapter_model.safetensors"))
    assert old.keys() == new.keys()
    return any(not torch.equal(old[k], new[k]) for k in old)


def test_a_staged_candidate_is_shadowed_canaried_and_promoted(
    tmp_path: Path, tiny_model: str, encoder: Any
) -> None:
    keys = KeyRing.generate()
    stream = load_sentiment_stream(max_train_per_class=4, max_test_per_class=4)
    tweets, movies, products, _ = stream.tasks
    _memory(tmp_path / "mem", keys, encoder, [*tweets.train, *movies.train])
    dep = tmp_path / "dep"
    options = {**FAST, "epochs": 1, "stage": True, "gate": {"max_drop": 1.0, "margin": 1.0}}
    init_deployment(dep, memory=tmp_path / "mem", model=tiny_model, keys=keys, options=options)
    staged = update(dep, _write(tmp_path / "p.jsonl", list(products.train)), keys=keys)
    assert staged.decision == "staged"
    assert staged.version is None
    with pytest.raises(ValidationError, match="is staged"):
        update(dep, _write(tmp_path / "p2.jsonl", list(products.test)), keys=keys)
    requests = _write(tmp_path / "requests.jsonl", [*tweets.test, *products.test])
    report = shadow(dep, requests, keys=keys)
    assert report["mode"] == "shadow"
    assert 0.0 <= report["agreement"] <= 1.0
    n = len(tweets.test) + len(products.test)
    assert report["current"]["requests"] == report["candidate"]["requests"] == n
    assert set(report["current"]["per_task"]) == {"tweets"}  # products is not an old task of v1
    assert report["candidate"]["safety"] is not None
    assert report["candidate"]["latency"]["p95_ms"] >= report["candidate"]["latency"]["p50_ms"] > 0
    canary = shadow(dep, requests, keys=keys, canary=0.5)
    routed = sum(canary_arm(ex.text, 0.5) for ex in [*tweets.test, *products.test])
    assert canary["candidate"]["requests"] == routed
    assert canary["current"]["requests"] == n - routed
    done = promote(dep, keys=keys)
    assert done.version == 2
    assert Deployment.open(dep, keys).pending() is None
    log = AuditLog.open(default_log_path(dep / "memory"), keys, create=False)
    assert [e.details["mode"] for e in log.entries() if e.kind == "shadow"] == ["shadow", "canary"]
    # The report shows both arms of both runs on the update's row, with the decision they led to.
    from rehearsal.deployment.report import _decisions

    row = next(r for r in _decisions(log.entries()) if r[1] == staged.update and r[2] == "pass")
    assert "shadow: current" in row[5]
    assert "canary: current" in row[5]
    assert f"on {routed}" in row[5]  # the canary arm's request count


def test_canary_routing_is_a_stable_share_of_requests() -> None:
    texts = [f"request number {i}" for i in range(2000)]
    picks = [canary_arm(t, 0.1) for t in texts]
    assert picks == [canary_arm(t, 0.1) for t in texts]  # the same request, the same arm
    assert 0.07 < sum(picks) / len(picks) < 0.13
    assert all(
        canary_arm(t, 0.2) for t, p in zip(texts, picks, strict=True) if p
    )  # a wider canary keeps its own


def test_update_refuses_unlabelled_data_and_changes_nothing(
    tmp_path: Path, tiny_model: str, encoder: Any
) -> None:
    keys = KeyRing.generate()
    stream = load_sentiment_stream(max_train_per_class=3, max_test_per_class=1)
    _memory(tmp_path / "mem", keys, encoder, list(stream.tasks[0].train))
    dep = tmp_path / "dep"
    init_deployment(dep, memory=tmp_path / "mem", model=tiny_model, keys=keys, options={**FAST, "epochs": 1})
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "no label here"}) + "\n", encoding="utf-8")
    with pytest.raises(ValidationError, match="has no 'label'"):
        update(dep, bad, keys=keys)
    assert len(Deployment.open(dep, keys).states()) == 1


def test_the_cli_makes_updates_and_lists_a_deployment(
    tmp_path: Path,
    tiny_model: str,
    encoder: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    keys = KeyRing.generate()
    monkeypatch.setenv("REHEARSAL_MASTER_KEY", keys.export_base64())
    stream = load_sentiment_stream(max_train_per_class=3, max_test_per_class=1)
    tweets, _, products, _ = stream.tasks
    _memory(tmp_path / "mem", keys, encoder, list(tweets.train))
    dep = str(tmp_path / "dep")
    config = json.dumps({**FAST, "epochs": 1, "gate": {"max_drop": 1.0, "margin": 1.0}})
    argv = ["init-deployment", dep, "--memory", str(tmp_path / "mem"), "--model", tiny_model]
    assert main([*argv, "--config", config]) == 0
    data = _write(tmp_path / "products.jsonl", list(products.train))
    capsys.readouterr()
    assert main(["update", dep, "--data", str(data), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["decision"] == "pass"
    assert out["version"] == 2
    assert main(["versions", dep]) == 0
    assert main(["audit", "verify", dep]) == 0
    assert main(["rollback", dep, "1"]) == 0
    assert Deployment.open(dep, keys).current()[0].version == 1


def _chromium() -> str:
    import shutil

    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("chromium is not installed (scripts/bootstrap.sh installs the Debian package as root)")
    return found


def test_the_report_renders_in_headless_chromium_with_every_plot(
    tmp_path: Path, tiny_model: str, encoder: Any
) -> None:
    import subprocess

    from rehearsal.deployment.report import PLOTS, write_report

    keys = KeyRing.generate()
    stream = load_sentiment_stream(max_train_per_class=3, max_test_per_class=1)
    tweets, movies, products, _ = stream.tasks
    _memory(tmp_path / "mem", keys, encoder, [*tweets.train, *movies.train])
    dep = tmp_path / "dep"
    options = {**FAST, "epochs": 1, "gate": {"max_drop": 1.0, "margin": 1.0}}
    init_deployment(dep, memory=tmp_path / "mem", model=tiny_model, keys=keys, options=options)
    update(dep, _write(tmp_path / "p.jsonl", list(products.train)), keys=keys)
    page = write_report(dep, keys=keys)
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    command = [
        _chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000",
        "--dump-dom", page.as_uri(),
    ]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"chromium could not run: {exc}")
    if done.returncode != 0 or "<html" not in done.stdout:
        pytest.fail(f"chromium failed (exit {done.returncode}): {done.stderr[-2000:]}")
    dom = done.stdout
    for name in PLOTS:
        assert f'id="plot-{name}"' in dom, name
    assert dom.count('data-rendered="yes"') == len(PLOTS)
    assert f'data-plots-rendered="{len(PLOTS)}"' in dom
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert console == []
    assert "update-" in dom
    assert "train-update" in dom


@pytest.mark.slow
def test_a_deployment_from_a_finished_run_keeps_its_memory_labels_and_audit_chain(
    tmp_path: Path, tiny_model: str, master_key: None, tiny_stream: Any
) -> None:
    from _models import tiny_run_config

    from rehearsal.runner.handoff import run_handoff
    from rehearsal.runner.loop import run

    # The run reads its stream from a file, so the deployment finds the same labels and test sets.
    data = tmp_path / "stream.jsonl"
    with data.open("w", encoding="utf-8") as fh:
        for task in tiny_stream.tasks:
            for split, rows in (("train", task.train), ("test", task.test)):
                for ex in rows:
                    row = {"text": ex.text, "label": ex.label, "task": ex.task, "split": split}
                    fh.write(json.dumps(row) + "\n")
    run(tiny_run_config(tmp_path, tiny_model, method="hybrid", data=str(data), tasks=None))
    keys = KeyRing.from_env("REHEARSAL_MASTER_KEY")
    run_log = AuditLog.open(default_log_path(tmp_path / "run" / "memory"), keys, create=False)
    entries_before = len(run_log.entries())
    dep = tmp_path / "dep"
    first = init_deployment(
        dep,
        from_run=run_handoff(tmp_path / "run", keys=keys),
        keys=keys,
        options={**FAST, "max_labels": 24, "epochs": 1},
    )
    state = Deployment.open(dep, keys).current()[1]
    assert set(state.tasks) == {"living", "verbs"}
    assert state.labels == list(tiny_stream.labels)  # the run's label ids index its stream's labels
    assert set(first.metrics["accuracy"]) == {"living", "verbs"}
    log = AuditLog.open(default_log_path(dep / "memory"), keys, create=False)
    assert len(log.entries()) > entries_before  # the run's chain goes on in the deployment
    assert log.entries()[-1].details["decision"] == "ungated"


def test_an_update_flagged_for_approval_ships_once_approved_for_that_data(
    tmp_path: Path, tiny_model: str, encoder: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = KeyRing.generate()
    monkeypatch.setenv("REHEARSAL_MASTER_KEY", keys.export_base64())
    stream = load_sentiment_stream(max_train_per_class=3, max_test_per_class=1)
    tweets, movies, _, _ = stream.tasks
    _memory(tmp_path / "mem", keys, encoder, list(tweets.train))
    dep = tmp_path / "dep"
    options = {**FAST, "epochs": 1, "gate": {"max_drop": 1.0, "margin": 1.0}}
    init_deployment(dep, memory=tmp_path / "mem", model=tiny_model, keys=keys, options=options)
    personal = [Example("please write to jane.doe@example.com about my refund", "negative", "refunds")]
    data = _write(tmp_path / "personal.jsonl", [*movies.train, *personal])
    with pytest.raises(UpdateBlockedError, match="contain PII") as blocked:
        update(dep, data, keys=keys)
    assert blocked.value.decision == "needs-approval"
    assert main(["approve", str(dep), str(blocked.value.update), "--approver", "alice"]) == 0
    done = update(dep, data, keys=keys)  # the same data: the same update, now approved
    assert done.update == blocked.value.update
    assert done.version == 2
    log = AuditLog.open(default_log_path(dep / "memory"), keys, create=False)
    last = [e.details for e in log.entries() if e.kind == "train-update"][-1]
    assert last["approver"] == "alice"


def test_the_ewc_strategy_carries_its_fisher_state_from_version_to_version(
    tmp_path: Path, tiny_model: str, encoder: Any
) -> None:
    from rehearsal.methods.ewc import EWC

    keys = KeyRing.generate()
    stream = load_sentiment_stream(max_train_per_class=3, max_test_per_class=1)
    tweets, movies, _, _ = stream.tasks
    _memory(tmp_path / "mem", keys, encoder, list(tweets.train))
    dep = tmp_path / "dep"
    options = {**FAST, "epochs": 1, "gate": {"max_drop": 1.0, "margin": 1.0}}
    init_deployment(
        dep, memory=tmp_path / "mem", model=tiny_model, strategy="ewc", keys=keys, options=options
    )
    first = Path(Deployment.open(dep, keys).current()[0].weights)
    assert EWC.load(first / "ewc.pt").consolidations == 1
    update(dep, _write(tmp_path / "movies.jsonl", list(movies.train)), keys=keys)
    second = Path(Deployment.open(dep, keys).current()[0].weights)
    assert second != first
    assert EWC.load(second / "ewc.pt").consolidations == 2  # the update started from v1's state


def test_the_reports_decisions_name_the_approver_and_read_reasons_as_the_decision_does() -> None:
    from rehearsal.deployment.report import _decisions
    from rehearsal.governance.audit_log import AuditEntry

    def entry(seq: int, kind: str, **details: Any) -> AuditEntry:
        return AuditEntry(seq, 0.0, kind, "cli", details, "0" * 64, "k", "m")

    entries = [
        entry(0, "train-update", run_id="u1", decision="needs-approval", reasons=["canary-unproven:all"]),
        entry(1, "approve", run_id="u1", approver="ana@example.org", codes=["canary-unproven:all"]),
        entry(
            2, "train-update", run_id="u1", decision="pass", reasons=["canary-unproven:all"], approver="ana"
        ),
        entry(3, "train-update", run_id="u2", decision="pass", reasons=[]),
    ]
    rows = _decisions(entries)
    assert rows[0][3:5] == ["ana@example.org", "canary-unproven:all"]  # blocked: the reason is why
    assert rows[1][2] == "pass"
    assert rows[1][3] == "ana@example.org, ana"
    assert rows[1][4] == "flags accepted by the approver: canary-unproven:all"
    assert rows[2][3:] == ["-", "-", "-"]


@pytest.mark.parametrize("verbose", [True, False])
def test_deployment_verbs_keep_the_libraries_load_reports_off_the_console_unless_verbose(
    tmp_path: Path,
    tiny_model: str,
    encoder: Any,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    verbose: bool,
) -> None:
    keys = KeyRing.generate()
    monkeypatch.setenv("REHEARSAL_MASTER_KEY", keys.export_base64())
    stream = load_sentiment_stream(max_train_per_class=3, max_test_per_class=1)
    _memory(tmp_path / "mem", keys, encoder, list(stream.tasks[0].train))
    config = json.dumps({**FAST, "epochs": 1})  # 8 outputs over a 6-label tiny head: a reinit to report
    argv = [
        "init-deployment",
        str(tmp_path / "dep"),
        "--memory",
        str(tmp_path / "mem"),
        "--model",
        tiny_model,
    ]
    capfd.readouterr()
    assert main([*argv, "--config", config, *(["--verbose"] if verbose else [])]) == 0
    err = capfd.readouterr().err
    assert ("Loading weights" in err) is verbose  # the weight-loading bar; the load report goes to logging
    assert "LOAD REPORT" not in err or verbose
