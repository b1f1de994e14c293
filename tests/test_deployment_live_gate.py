"""Staging that tells "worse" from "too few examples to tell", and promote judging the shadow/canary.

The rule (``rehearsal.governance.gate.staging_verdict``): an interval within the margin passes, a change
worse than the margin fails, and a change within the margin whose interval reaches past it needs
a person's approval. Promote applies the same rule to the per-request results a shadow or canary left,
and the file that carries them (``pending.json``) is sealed with the deployment's key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rehearsal.crypto.keys import KeyRing
from rehearsal.deployment.folder import Deployment
from rehearsal.deployment.init import init_deployment
from rehearsal.deployment.shadow import shadow
from rehearsal.deployment.update import promote, rollback, update
from rehearsal.errors import IntegrityError, UpdateBlockedError, ValidationError
from rehearsal.governance.audit_log import AuditLog, default_log_path
from rehearsal.governance.gate import GateConfig, compare_arms, staging_verdict
from rehearsal.governance.updates import live_check, staging_check
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.runner.sentiment import load_sentiment_stream
from tests.test_deployment import FAST, _memory, _write


def _row(delta: float, low: float) -> dict[str, float]:
    return {"delta": delta, "low": low, "high": delta + (delta - low)}


def test_the_verdict_has_three_outcomes() -> None:
    assert staging_verdict(_row(-0.02, -0.08), margin=0.1) == "pass"
    assert staging_verdict(_row(-0.15, -0.30), margin=0.1) == "fail"
    assert staging_verdict(_row(-0.05, -0.33), margin=0.2) == "needs-approval"


def test_a_small_suite_that_changed_one_answer_needs_approval_and_a_large_one_passes() -> None:
    gate = GateConfig(margin=0.2)
    small_current = np.array([True] * 10 + [False] * 8)
    small_candidate = small_current.copy()
    small_candidate[[0, 1, 2]] = False  # 3 answers of 18 lost, 2 gained: -0.056 (support's week 3)
    small_candidate[[10, 11]] = True
    _, codes, reasons, decision = staging_check(gate, {"editorials": (small_current, small_candidate)}, 0)
    assert decision == "needs-approval"
    assert codes == ["staging-unproven:editorials"]
    assert "a person must approve" in reasons[0]
    large_current = np.tile(small_current, 20)
    large_candidate = np.tile(small_candidate, 20)
    _, codes, _, decision = staging_check(gate, {"editorials": (large_current, large_candidate)}, 0)
    assert (decision, codes) == ("pass", [])
    worse = large_candidate.copy()
    worse[: len(worse) // 2] = False
    _, codes, _, decision = staging_check(gate, {"editorials": (large_current, worse)}, 0)
    assert (decision, codes) == ("fail", ["staging:editorials"])


def test_compare_arms_pairs_a_shadow_and_not_a_canary() -> None:
    rng = np.random.default_rng(0)
    same = rng.random(200) < 0.7
    paired = compare_arms(same, same, paired=True, rng=np.random.default_rng(1))
    assert paired["low"] == paired["high"] == paired["delta"] == 0.0  # paired: identical answers cancel
    apart = compare_arms(same, same, paired=False, rng=np.random.default_rng(1))
    assert apart["delta"] == 0.0
    assert apart["low"] < -0.05 < 0.05 < apart["high"]
    with pytest.raises(ValidationError, match="request by request"):
        compare_arms(same, same[:-1], paired=True, rng=np.random.default_rng(1))
    with pytest.raises(ValidationError, match="labelled requests"):
        compare_arms(same, same[:0], paired=False, rng=np.random.default_rng(1))


def test_live_check_names_the_mode_and_the_safety_slice() -> None:
    gate = GateConfig(margin=0.05)
    ones, zeros = [1] * 60, [0] * 60
    live = {
        "mode": "canary",
        "correct": {"all": {"current": ones, "candidate": zeros}, "safety": {"current": [], "candidate": []}},
    }
    summary, codes, reasons, decision = live_check(gate, live, 0)
    assert (decision, codes) == ("fail", ["canary:all"])
    assert summary["all"]["delta"] == -1.0
    assert "safety" not in summary
    assert reasons[0].startswith("staging: canary on requests changed -1.000")
    live["correct"]["safety"] = {"current": ones[:4], "candidate": [1, 1, 1, 0]}
    _, codes, _, decision = live_check(gate, {**live, "mode": "shadow"}, 0)
    assert decision == "fail"
    assert codes == ["shadow:all", "shadow:safety"]


def _staged(
    tmp_path: Path, tiny_model: str, encoder: Any, *, margin: float = 1.0
) -> tuple[Path, KeyRing, Path]:
    keys = KeyRing.generate()
    stream = load_sentiment_stream(max_train_per_class=4, max_test_per_class=4)
    tweets, movies, products, _ = stream.tasks
    _memory(tmp_path / "mem", keys, encoder, [*tweets.train, *movies.train])
    dep = tmp_path / "dep"
    options = {**FAST, "epochs": 1, "stage": True, "gate": {"max_drop": 1.0, "margin": margin}}
    init_deployment(dep, memory=tmp_path / "mem", model=tiny_model, keys=keys, options=options)
    update(dep, _write(tmp_path / "p.jsonl", list(products.train)), keys=keys)
    requests = _write(tmp_path / "requests.jsonl", [*tweets.test, *products.test])
    return dep, keys, requests


@pytest.mark.slow
def test_promote_fails_a_candidate_the_shadow_shows_worse(
    tmp_path: Path, tiny_model: str, encoder: Any
) -> None:
    dep, keys, requests = _staged(tmp_path, tiny_model, encoder, margin=0.1)
    shadow(dep, requests, keys=keys)
    folder = Deployment.open(dep, keys)
    pending = folder.pending()
    assert pending is not None
    live = pending.live
    assert live is not None
    n = len(live["correct"]["all"]["current"])
    assert live["mode"] == "shadow"
    assert n == 24
    assert len(live["correct"]["all"]["candidate"]) == n
    # Injected through the deployment (so sealed with its key): the suite says the candidate is the
    # deployed version's equal, the shadow that it got every request wrong that the other got right.
    pending.staged = {t: [current, current] for t, (current, _) in pending.staged.items()}
    live["correct"]["all"] = {"current": [1] * n, "candidate": [0] * n}
    folder.set_pending(pending)
    with pytest.raises(UpdateBlockedError) as blocked:
        promote(dep, keys=keys)
    assert blocked.value.decision == "fail"
    assert any(r.startswith("staging: shadow on requests changed -1.000") for r in blocked.value.reasons)
    log = AuditLog.open(default_log_path(dep / "memory"), keys, create=False)
    log.verify()
    last = [e for e in log.entries() if e.kind == "train-update"][-1]
    assert last.details["decision"] == "fail"
    assert last.details["reasons"] == ["shadow:all"]
    assert last.details["live"]["all"]["delta"] == -1.0
    assert folder.pending() is None  # the blocked candidate was discarded


@pytest.mark.slow
def test_an_edited_staged_candidate_is_refused_and_rollback_discards_it(
    tmp_path: Path, tiny_model: str, encoder: Any
) -> None:
    dep, keys, requests = _staged(tmp_path, tiny_model, encoder)
    path = dep / "pending.json"
    sealed = json.loads(path.read_text())
    assert set(sealed) == {"pending", "tag"}
    sealed["pending"]["gate_preview"]["decision"] = "pass"
    sealed["pending"]["staged"] = {t: [[1, 1], [1, 1]] for t in sealed["pending"]["staged"]}
    path.write_text(json.dumps(sealed))
    with pytest.raises(IntegrityError, match="fails its check"):
        promote(dep, keys=keys)
    with pytest.raises(IntegrityError, match="fails its check"):
        shadow(dep, requests, keys=keys)
    with pytest.raises(IntegrityError, match="fails its check"):
        Deployment.open(dep, KeyRing.generate()).pending()  # another key cannot vouch for it either
    assert rollback(dep, 1, keys=keys)["discarded"] is None
    assert not path.exists()
    assert Deployment.open(dep, keys).pending() is None


@pytest.mark.slow
def test_a_staged_candidate_that_needs_approval_stays_staged_until_approved(
    tmp_path: Path, tiny_model: str, encoder: Any, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    from rehearsal.cli.main import main

    dep, keys, requests = _staged(tmp_path, tiny_model, encoder, margin=0.1)
    monkeypatch.setenv("REHEARSAL_MASTER_KEY", keys.export_base64())
    shadow(dep, requests, keys=keys)
    folder = Deployment.open(dep, keys)
    pending = folder.pending()
    assert pending is not None
    assert pending.live is not None
    n = len(pending.live["correct"]["all"]["current"])
    # Within the margin (-1/24) but on too few requests to show it: 2 answers lost, 1 gained.
    pending.staged = {t: [current, current] for t, (current, _) in pending.staged.items()}
    pending.live["correct"]["all"] = {
        "current": [1, 1, 0] + [1] * (n - 3),
        "candidate": [0, 0, 1] + [1] * (n - 3),
    }
    folder.set_pending(pending)
    entries = len(RehearsalMemory.open(dep / "memory", keys=keys, read_only=True))
    capsys.readouterr()
    assert main(["promote", str(dep)]) == 3  # EXIT_NEEDS_APPROVAL
    out = capsys.readouterr().out
    assert "the candidate stays staged" in out
    assert f"rehearsal approve {dep} {pending.update}" in out
    assert folder.pending() == pending  # still staged, entries kept
    assert len(RehearsalMemory.open(dep / "memory", keys=keys, read_only=True)) == entries
    assert main(["approve", str(dep), pending.update, "--approver", "lead"]) == 0
    assert main(["promote", str(dep)]) == 0
    assert folder.current()[0].version == 2
    assert folder.pending() is None
    log = AuditLog.open(default_log_path(dep / "memory"), keys, create=False)
    log.verify()
    updates = [e.details for e in log.entries() if e.kind == "train-update"]
    assert [(u["decision"], u["approver"]) for u in updates[-2:]] == [
        ("needs-approval", None),
        ("pass", "lead"),
    ]
    assert updates[-1]["reasons"] == ["shadow-unproven:all"]


def test_a_new_task_answered_at_chance_is_flagged_for_approval() -> None:
    from rehearsal.deployment.evaluate import unlearned_tasks
    from rehearsal.deployment.folder import VersionState
    from rehearsal.examples import Example

    state = VersionState(
        update="u",
        labels=["a", "b", "c", "d", "x", "y"],
        tasks={"old": ["x", "y"], "new": ["a", "b", "c", "d"], "learned": ["a", "b"]},
        experts={},
    )
    held = [Example(text=f"t{i}", label="a", task="new", tags=()) for i in range(8)]
    before = {"old": 0.9}
    flags = unlearned_tasks(state, before, {"old": 0.2, "new": 0.25, "learned": 0.75}, held)
    assert [code for code, _ in flags] == ["unlearned:new"]  # 0.25 over 4 labels is chance
    assert "scores 0.250 on its 8 held-out examples" in flags[0][1]
    assert unlearned_tasks(state, before, {"old": 0.9, "new": 0.375}, held) == []


def test_a_block_is_unproven_only_when_every_code_is_thin_evidence() -> None:
    def blocked(decision: str, *codes: str) -> UpdateBlockedError:
        return UpdateBlockedError("x", decision=decision, reasons=[], codes=list(codes))

    assert blocked("needs-approval", "staging-unproven:a", "canary-unproven:all").unproven_only
    assert not blocked("needs-approval", "staging-unproven:a", "unlearned:b").unproven_only
    assert not blocked("needs-approval", "pii-in-replay:email").unproven_only
    assert not blocked("needs-approval").unproven_only
    assert not blocked("fail", "staging-unproven:a").unproven_only
