"""The validation gate before a model update ships, and the staging comparison before it is promoted.

:func:`evaluate_gate` runs the suites in order and stops at the first that fails:

1. regression: each past task's held-out accuracy may not drop by more than ``max_drop`` from the current
   model's (a task missing from the candidate's results fails too);
2. safety: a PII scan (:mod:`rehearsal.governance.pii`) of the model's outputs on a prompt set (a finding
   fails the update) and of the replay texts selected for training (a finding flags the update for approval:
   the data may be legitimately personal, a person must say so).

A flagged update ships only once :func:`approve` has recorded an approver in the audit log
(:func:`is_approved` reads it back from the verified log).

:func:`compare` is the staging step: candidate and current model on the same held-out examples, the
per-task accuracy delta with a paired bootstrap 95% interval, and the rule "promote when every task's
lower bound is at least ``-margin``"; :func:`staging_verdict` tells a task that is worse than the margin
(fail) from one with too few examples to show it is not (needs approval). :func:`compare_arms` does the
same for live requests of a shadow or canary.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from rehearsal.config import ConfigMixin
from rehearsal.errors import ConfigError, ValidationError
from rehearsal.governance.pii import PII_KINDS, scan

if TYPE_CHECKING:
    from rehearsal.governance.audit_log import AuditEntry, AuditLog

__all__ = [
    "GateConfig",
    "GateReport",
    "StagingReport",
    "approve",
    "compare",
    "compare_arms",
    "evaluate_gate",
    "is_approved",
    "staging_verdict",
]

PASS, FAIL, NEEDS_APPROVAL = "pass", "fail", "needs-approval"


@dataclasses.dataclass
class GateConfig(ConfigMixin):
    """Thresholds of the gate and of the staging comparison."""

    max_drop: float = 0.02  # largest allowed fall of a past task's accuracy (absolute, 0.02 = 2 points)
    pii_kinds: list[str] = dataclasses.field(default_factory=lambda: list(PII_KINDS))
    block_pii_in_outputs: bool = True  # False: PII in outputs flags for approval instead of failing
    margin: float = 0.0  # staging: promote if every task's delta lower bound >= -margin
    n_boot: int = 1000
    confidence: float = 0.95

    def __post_init__(self) -> None:
        for name in ("max_drop", "margin"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name!r} must be in [0, 1], got {value!r}")
        unknown = sorted(set(self.pii_kinds) - set(PII_KINDS))
        if unknown:
            raise ConfigError(f"'pii_kinds' has unknown kinds {unknown}; known: {list(PII_KINDS)}")
        if isinstance(self.n_boot, bool) or not isinstance(self.n_boot, int) or self.n_boot < 100:
            raise ConfigError(f"'n_boot' must be an int >= 100, got {self.n_boot!r}")
        if not isinstance(self.confidence, float) or not 0.5 <= self.confidence < 1.0:
            raise ConfigError(f"'confidence' must be a float in [0.5, 1), got {self.confidence!r}")


@dataclasses.dataclass(frozen=True)
class GateReport:
    """``decision`` is "pass", "fail" or "needs-approval"; ``reasons`` say why it is not "pass", and
    ``codes`` say it again in a form an audit log takes (``regression:<task>``, ``pii-in-outputs:<kind>``,
    ``pii-in-replay:<kind>``)."""

    decision: str
    reasons: list[str]
    risk_flags: list[str]
    suites_run: list[str]
    deltas: dict[str, float]
    codes: list[str] = dataclasses.field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.decision == PASS

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "passed": self.passed}


def _accuracies(name: str, values: Mapping[str, float]) -> dict[str, float]:
    if not isinstance(values, Mapping):
        raise ValidationError(f"{name} must map task names to accuracies, got {type(values).__name__}")
    out: dict[str, float] = {}
    for task, acc in values.items():
        if isinstance(acc, bool) or not isinstance(acc, int | float) or not 0.0 <= float(acc) <= 1.0:
            raise ValidationError(f"{name}[{task!r}] must be an accuracy in [0, 1], got {acc!r}")
        out[str(task)] = float(acc)
    return out


def _pii_counts(texts: Sequence[str], kinds: tuple[str, ...]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for text in texts:
        for finding in scan(text, kinds=kinds):
            counts[finding.kind] = counts.get(finding.kind, 0) + 1
    return counts


def evaluate_gate(
    baseline_accuracies: Mapping[str, float],
    candidate_accuracies: Mapping[str, float],
    replay_texts: Sequence[str],
    model_outputs: Sequence[str],
    config: GateConfig | None = None,
) -> GateReport:
    """Run the regression suite, then the safety suite; stop at the first failure (see module doc).

    ``baseline_accuracies``: the current model on each past task's held-out set; ``candidate_accuracies``:
    the update on the same sets (it may add new tasks). Reasons name tasks and PII kinds, never text.
    """
    cfg = config or GateConfig()
    base = _accuracies("baseline_accuracies", baseline_accuracies)
    cand = _accuracies("candidate_accuracies", candidate_accuracies)
    reasons: list[str] = []
    codes: list[str] = []
    deltas = {task: round(cand[task] - acc, 6) for task, acc in base.items() if task in cand}
    for task in base:
        if task not in cand:
            reasons.append(f"regression: task {task!r} was not evaluated on the candidate")
        elif deltas[task] < -cfg.max_drop:
            reasons.append(
                f"regression: task {task!r} accuracy fell {-deltas[task]:.3f} "
                f"({base[task]:.3f} -> {cand[task]:.3f}), more than max_drop {cfg.max_drop}"
            )
        else:
            continue
        codes.append(f"regression:{task}")
    if reasons:
        return GateReport(FAIL, reasons, [], ["regression"], deltas, codes)
    kinds = tuple(cfg.pii_kinds)
    flags: list[str] = []
    in_outputs = _pii_counts(model_outputs, kinds)
    if in_outputs:
        found = ", ".join(f"{n} {k}" for k, n in sorted(in_outputs.items()))
        message = f"safety: model outputs on the prompt set contain PII ({found})"
        (reasons if cfg.block_pii_in_outputs else flags).append(message)
        codes.extend(f"pii-in-outputs:{kind}" for kind in sorted(in_outputs))
    if reasons:
        return GateReport(FAIL, reasons, flags, ["regression", "safety"], deltas, codes)
    in_replay = _pii_counts(replay_texts, kinds)
    if in_replay:
        found = ", ".join(f"{n} {k}" for k, n in sorted(in_replay.items()))
        flags.append(f"safety: texts to be kept for replay contain PII ({found})")
        codes.extend(f"pii-in-replay:{kind}" for kind in sorted(in_replay))
    decision = NEEDS_APPROVAL if flags else PASS
    return GateReport(decision, list(flags), flags, ["regression", "safety"], deltas, codes)


# -- approval --------------------------------------------------------------------------------------


def approve(
    log: AuditLog,
    run_id: str,
    approver: str,
    *,
    report: GateReport | None = None,
    codes: Sequence[str] | None = None,
    data_digest: str | None = None,
) -> AuditEntry:
    """Record that ``approver`` accepts the flagged update ``run_id`` (refused for a failed gate).

    ``codes`` and ``data_digest`` name what is accepted — these flags on this data — so that a governed
    run (``rehearsal.governance.updates.approver_of``) does not take the approval for other data or flags."""
    if report is not None and report.decision == FAIL:
        raise ValidationError(f"run {run_id!r} failed the gate; a failed update cannot be approved")
    details: dict[str, Any] = {"run_id": run_id, "approver": approver}
    if report is not None:
        details["flags"] = len(report.risk_flags)
    if codes is not None:
        details["codes"] = list(codes)
    if data_digest is not None:
        details["data_digest"] = data_digest
    return log.append("approve", details, actor=approver)


def is_approved(log: AuditLog, run_id: str) -> str | None:
    """The approver of ``run_id`` recorded in the (verified) log, or None."""
    for entry in reversed(log.entries()):
        if entry.kind == "approve" and entry.details.get("run_id") == run_id:
            return str(entry.details["approver"])
    return None


# -- staging ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StagingReport:
    """Per task: n, candidate and current accuracy, delta and its bootstrap interval, and the decision."""

    tasks: dict[str, dict[str, float]]
    promote: bool
    margin: float
    confidence: float


def compare(
    candidate_correct: np.ndarray,
    current_correct: np.ndarray,
    *,
    tasks: Sequence[str] | np.ndarray | None = None,
    rng: np.random.Generator,
    n_boot: int = 1000,
    margin: float = 0.0,
    confidence: float = 0.95,
) -> StagingReport:
    """Compare two models on the same examples: ``*_correct`` (n,) bool, ``tasks`` (n,) task names.

    The interval is a paired percentile bootstrap: examples of a task are resampled with replacement and
    both models are scored on the same resample, so the shared difficulty of an example cancels out.
    """
    cand = np.asarray(candidate_correct)
    cur = np.asarray(current_correct)
    if cand.dtype != bool or cur.dtype != bool or cand.ndim != 1 or cand.shape != cur.shape:
        raise ValidationError(
            f"candidate_correct and current_correct must be 1-D bool arrays of one length, got "
            f"{cand.dtype}{cand.shape} and {cur.dtype}{cur.shape}"
        )
    if len(cand) == 0:
        raise ValidationError("nothing to compare: no examples")
    labels = np.asarray(["all"] * len(cand) if tasks is None else tasks)
    if labels.shape != cand.shape:
        raise ValidationError(f"tasks must have one name per example ({len(cand)}), got {labels.shape}")
    alpha = (1.0 - confidence) / 2.0
    out: dict[str, dict[str, float]] = {}
    for task in sorted(set(labels.tolist())):
        rows = np.flatnonzero(labels == task)
        diff = cand[rows].astype(np.float64) - cur[rows].astype(np.float64)
        samples = rng.integers(0, len(rows), size=(n_boot, len(rows)))
        boot = diff[samples].mean(axis=1)
        low, high = np.quantile(boot, [alpha, 1.0 - alpha])
        out[str(task)] = {
            "n": float(len(rows)),
            "candidate": float(cand[rows].mean()),
            "current": float(cur[rows].mean()),
            "delta": float(diff.mean()),
            "low": float(low),
            "high": float(high),
        }
    promote = all(t["low"] >= -margin for t in out.values())
    return StagingReport(out, promote, margin, confidence)


def staging_verdict(row: Mapping[str, float], margin: float) -> str:
    """One task's staging outcome from its row of :func:`compare` (or :func:`compare_arms`).

    "pass": the interval's low end is within ``margin`` (shown to be no worse than that); "fail": the
    change itself is worse than ``-margin``; otherwise "needs-approval": the change is within the margin
    but too few examples back it to show that (an 18-example suite's interval is about ±0.28 wide, so
    no honest margin passes a small new task on numbers alone) and a person decides.
    """
    if row["low"] >= -margin:
        return PASS
    return FAIL if row["delta"] < -margin else NEEDS_APPROVAL


def compare_arms(
    candidate_correct: np.ndarray,
    current_correct: np.ndarray,
    *,
    paired: bool,
    rng: np.random.Generator,
    n_boot: int = 1000,
    confidence: float = 0.95,
) -> dict[str, float]:
    """Accuracy change from live requests: a shadow (``paired``: both models answered the same requests,
    in order) or a canary (two disjoint arms, each resampled on its own). Same row as :func:`compare`,
    with each arm's count."""
    cand = np.asarray(candidate_correct, dtype=bool)
    cur = np.asarray(current_correct, dtype=bool)
    if cand.ndim != 1 or cur.ndim != 1 or not len(cand) or not len(cur):
        raise ValidationError(f"both arms need labelled requests, got {cand.shape} and {cur.shape}")
    if paired and cand.shape != cur.shape:
        raise ValidationError(f"a shadow pairs its arms request by request, got {cand.shape} and {cur.shape}")
    alpha = (1.0 - confidence) / 2.0
    if paired:
        diff = cand.astype(np.float64) - cur.astype(np.float64)
        boot = diff[rng.integers(0, len(diff), size=(n_boot, len(diff)))].mean(axis=1)
    else:
        boot_cand = cand[rng.integers(0, len(cand), size=(n_boot, len(cand)))].mean(axis=1)
        boot_cur = cur[rng.integers(0, len(cur), size=(n_boot, len(cur)))].mean(axis=1)
        boot = boot_cand - boot_cur
    low, high = np.quantile(boot, [alpha, 1.0 - alpha])
    return {
        "n_candidate": float(len(cand)),
        "n_current": float(len(cur)),
        "candidate": float(cand.mean()),
        "current": float(cur.mean()),
        "delta": float(cand.mean() - cur.mean()),
        "low": float(low),
        "high": float(high),
    }
