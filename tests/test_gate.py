"""The validation gate (regression + PII safety, approvals in the audit log) and the staging comparison."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rehearsal.crypto.keys import KeyRing
from rehearsal.errors import ConfigError, ValidationError
from rehearsal.governance.audit_log import AuditLog
from rehearsal.governance.audited import log_train_update
from rehearsal.governance.gate import GateConfig, approve, compare, evaluate_gate, is_approved

# -- a real, tiny continual learner: softmax regression over 4 classes, tasks A = {0, 1}, B = {2, 3} ----
DIM, CLASSES = 6, 4


def blobs(rng: np.random.Generator, classes: list[int], n: int) -> tuple[np.ndarray, np.ndarray]:
    centres = np.random.default_rng(42).normal(scale=3.0, size=(CLASSES, DIM))
    y = np.repeat(classes, n)
    return centres[y] + rng.normal(size=(len(y), DIM)), y


def train(w: np.ndarray, x: np.ndarray, y: np.ndarray, *, lr: float, steps: int) -> np.ndarray:
    w = w.copy()
    xb = np.hstack([x, np.ones((len(x), 1))])
    onehot = np.eye(CLASSES)[y]
    for _ in range(steps):
        logits = xb @ w
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        w -= lr * xb.T @ (p - onehot) / len(x)
    return w


def correct(w: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.asarray((np.hstack([x, np.ones((len(x), 1))]) @ w).argmax(axis=1) == y)


@pytest.fixture(scope="module")
def updates() -> dict[str, object]:
    rng = np.random.default_rng(0)
    train_a, train_b = blobs(rng, [0, 1], 100), blobs(rng, [2, 3], 100)
    test_a, test_b = blobs(rng, [0, 1], 200), blobs(rng, [2, 3], 200)
    current = train(np.zeros((DIM + 1, CLASSES)), *train_a, lr=0.1, steps=200)
    # Good: new task B with every old example replayed, modest learning rate. Four classes overlap a
    # little more than two, so even this costs task A about 2 points: the gate's tolerance is 5.
    replay = rng.permutation(len(train_a[0]))
    mixed_x = np.vstack([train_b[0], train_a[0][replay]])
    mixed_y = np.concatenate([train_b[1], train_a[1][replay]])
    good = train(current, mixed_x, mixed_y, lr=0.1, steps=200)
    # Harmful: task B only, high learning rate, long.
    harmful = train(current, *train_b, lr=5.0, steps=500)
    tests = {"A": test_a, "B": test_b}
    return {
        name: {task: correct(w, *data) for task, data in tests.items()}
        for name, w in (("current", current), ("good", good), ("harmful", harmful))
    }


def accuracies(results: dict[str, np.ndarray]) -> dict[str, float]:
    return {task: float(c.mean()) for task, c in results.items()}


def test_harmful_update_is_blocked_and_good_one_passes(updates: dict[str, dict[str, np.ndarray]]) -> None:
    baseline = {"A": accuracies(updates["current"])["A"]}
    config = GateConfig(max_drop=0.05)
    bad = evaluate_gate(baseline, accuracies(updates["harmful"]), [], [], config)
    assert bad.decision == "fail"
    assert bad.suites_run == ["regression"]  # fails fast: safety never ran
    assert "task 'A' accuracy fell" in bad.reasons[0]
    good = evaluate_gate(baseline, accuracies(updates["good"]), ["order 1042-8831"], ["Sure, done."], config)
    assert good.passed, good.reasons
    assert good.deltas["A"] >= -0.05


def test_staging_promotes_the_good_update_and_not_the_harmful_one(
    updates: dict[str, dict[str, np.ndarray]],
) -> None:
    def staged(name: str) -> object:
        cand = np.concatenate([updates[name]["A"], updates[name]["B"]])
        cur = np.concatenate([updates["current"]["A"], updates["current"]["B"]])
        tasks = ["A"] * len(updates[name]["A"]) + ["B"] * len(updates[name]["B"])
        return compare(cand, cur, tasks=tasks, rng=np.random.default_rng(1), margin=0.05)

    good, bad = staged("good"), staged("harmful")
    assert good.promote
    assert good.tasks["B"]["low"] > 0.5  # B learned, with confidence
    assert not bad.promote
    assert bad.tasks["A"]["high"] < 0.0  # A lost, with confidence
    assert bad.tasks["A"]["low"] <= bad.tasks["A"]["delta"] <= bad.tasks["A"]["high"]


def test_identical_models_have_a_zero_width_interval_at_zero() -> None:
    same = np.array([True, False, True, True])
    report = compare(same, same, rng=np.random.default_rng(0))
    assert report.tasks["all"]["low"] == report.tasks["all"]["high"] == 0.0
    assert report.promote


def test_pii_in_outputs_fails_and_in_replay_needs_approval() -> None:
    base = {"A": 0.9}
    leaked = evaluate_gate(base, {"A": 0.9}, [], ["your card 4111 1111 1111 1111 is on file"])
    assert leaked.decision == "fail"
    assert leaked.reasons == ["safety: model outputs on the prompt set contain PII (1 card)"]
    flagged = evaluate_gate(base, {"A": 0.9}, ["mail me at jane@example.com"], ["ok"])
    assert flagged.decision == "needs-approval"
    assert flagged.risk_flags == ["safety: texts to be kept for replay contain PII (1 email)"]
    assert "jane" not in repr(flagged)


def test_missing_task_fails_the_gate() -> None:
    report = evaluate_gate({"A": 0.9, "B": 0.8}, {"A": 0.9}, [], [])
    assert report.reasons == ["regression: task 'B' was not evaluated on the candidate"]


def test_flagged_update_waits_for_an_approval_in_the_audit_log(tmp_path: Path, keys: KeyRing) -> None:
    log = AuditLog.open(tmp_path / "audit.log", keys)
    report = evaluate_gate({"A": 0.9}, {"A": 0.91}, ["SSN 123-45-6789"], [])
    assert is_approved(log, "run-3") is None
    approve(log, "run-3", "alice@example.com", report=report)
    approver = is_approved(log, "run-3")
    log_train_update(
        log, run_id="run-3", config={"lr": 0.1}, data_ids=[1, 2], metrics=report.deltas,
        decision=report.decision, approver=approver,
    )  # fmt: skip
    assert is_approved(log, "run-3") == "alice@example.com"
    assert [e.kind for e in log.entries()] == ["approve", "train-update"]
    failed = evaluate_gate({"A": 0.9}, {"A": 0.5}, [], [])
    with pytest.raises(ValidationError, match="failed the gate; a failed update cannot be approved"):
        approve(log, "run-4", "alice@example.com", report=failed)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("max_drop", 1.5, "'max_drop' must be in"), ("pii_kinds", ["dna"], "unknown kinds"),
     ("n_boot", 10, "'n_boot' must be"), ("confidence", 1.0, "'confidence' must be")],
)  # fmt: skip
def test_bad_gate_config_names_the_field(field: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        GateConfig(**{field: value})  # type: ignore[arg-type]


def test_gate_config_round_trips(tmp_path: Path) -> None:
    config = GateConfig(max_drop=0.03, pii_kinds=["email", "card"], margin=0.01)
    assert GateConfig.from_dict(config.to_dict()) == config
    config.save(tmp_path / "gate.json")
    assert GateConfig.load(tmp_path / "gate.json") == config


def test_compare_rejects_mismatched_inputs() -> None:
    with pytest.raises(ValidationError, match="1-D bool arrays of one length"):
        compare(np.array([True]), np.array([True, False]), rng=np.random.default_rng(0))
    with pytest.raises(ValidationError, match="one name per example"):
        compare(np.array([True]), np.array([False]), tasks=["a", "b"], rng=np.random.default_rng(0))
