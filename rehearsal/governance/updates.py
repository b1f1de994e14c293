"""The controls around each update of a ``rehearsal run``: gate, version, audit entry, or undo.

A run whose method keeps a memory governs every phase (an *update*) once its weights are written. The
update's data is what the memory gained since the log's last audited generation (the phase's
admissions), and what it lost in that time (evictions by the admission policy):

1. the validation gate (when ``RunConfig.gate`` is set): the past tasks' accuracies after the phase
   against those before it (regression suite), and a PII scan of the texts the phase put into the memory,
   which later phases replay (safety suite); then staging: the candidate against the current version on
   the same held-out examples of every earlier task, promoted if each task's paired-bootstrap interval
   of the accuracy change stays above ``-gate.margin``, failed if a task's change itself is below it, and
   flagged for approval otherwise (the change is within the margin, the examples too few to show it;
   ``rehearsal.governance.gate.staging_verdict``). A deployment's promote adds its shadow's or canary's
   per-request results (:func:`live_check`). An update flagged for approval passes
   once ``rehearsal approve`` has recorded an approver for exactly these flags and this data (a keyed
   digest of the phase's texts) in the audit log;
2. a promoted update becomes a version (``rehearsal.governance.versions``: weights folder, memory
   generation and id boundary, config digest) and the memory's audit log gets an ``ingest`` entry for the
   admitted entries, a ``delete`` entry for evicted ones, and a ``train-update`` entry (run id, update id,
   config digest, data ids digest, data digest, metrics, decision with its codes, staging, approver, version);
3. a blocked update is logged too (decision "fail" or "needs-approval", with its codes), its admitted
   entries leave the memory again (index, catalog and vault; logged), and :class:`UpdateBlockedError`
   stops the run with the run's state still at the previous phase, so a resume retrains it. Evictions
   the phase's admission made are not undone: erased records stay erased, and under a capacity-bounded
   policy the retrained phase may admit a different sample, whose approval is then asked for again.

The audit log is ``<memory>/audit.log``, keyed from the run's master key; a run without a memory has no
key to sign with and is not governed. Task names that the log would refuse as free text are logged as
digests (``rehearsal.governance.audit_log.safe_token``).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from rehearsal.crypto.keys import KeyRing
from rehearsal.errors import UpdateBlockedError, ValidationError
from rehearsal.governance.audit_log import AuditEntry, AuditLog, safe_token
from rehearsal.governance.audited import (
    config_digest,
    last_audited_generation,
    log_delete,
    log_ingest,
    log_train_update,
)
from rehearsal.governance.gate import (
    FAIL,
    NEEDS_APPROVAL,
    PASS,
    GateConfig,
    approve,
    compare,
    compare_arms,
    evaluate_gate,
    staging_verdict,
)
from rehearsal.governance.versions import VersionsSeal, record_version
from rehearsal.memory.facade import RehearsalMemory

__all__ = [
    "UNGATED",
    "UpdateRecord",
    "approve_update",
    "approver_of",
    "awaiting_approval",
    "govern_update",
    "live_check",
    "run_id_for",
    "staging_check",
    "update_id",
    "worst_decision",
]

UNGATED = "ungated"  # the decision recorded for an update of a run without a gate
_DATA_DIGEST_PURPOSE = "update-data-digest"


def staging_check(
    gate: GateConfig, staged: Mapping[str, tuple[np.ndarray, np.ndarray]], seed: int
) -> tuple[dict[str, dict[str, float]], list[str], list[str], str]:
    """Staging: the candidate against the current version on the earlier tasks' held-out examples (paired
    bootstrap, ``rehearsal.governance.gate.compare``). Returns the per-task summary, codes and reasons
    for each task that does not pass (``staging:<task>`` when its change is worse than ``-gate.margin``,
    ``staging-unproven:<task>`` when its interval reaches past it), and the decision:
    "pass", "fail", or "needs-approval" (see ``rehearsal.governance.gate.staging_verdict``)."""
    tasks = [task for task, (current, _) in staged.items() for _ in range(len(current))]
    report = compare(
        np.concatenate([candidate for _, candidate in staged.values()]),
        np.concatenate([current for current, _ in staged.values()]),
        tasks=tasks,
        rng=np.random.default_rng(seed),
        n_boot=gate.n_boot,
        margin=gate.margin,
        confidence=gate.confidence,
    )
    codes, reasons, verdicts = [], [], []
    for task, row in report.tasks.items():
        verdict = staging_verdict(row, gate.margin)
        verdicts.append(verdict)
        if verdict != PASS:
            codes.append(f"{'staging' if verdict == FAIL else 'staging-unproven'}:{safe_token(task)}")
            reasons.append(_staging_reason(f"task {task!r}", row, gate, verdict))
    summary = {safe_token(task): _rounded(row) for task, row in report.tasks.items()}
    return summary, codes, reasons, worst_decision(verdicts)


def live_check(
    gate: GateConfig, live: Mapping[str, Any], seed: int
) -> tuple[dict[str, dict[str, float]], list[str], list[str], str]:
    """The staged candidate's live evidence, when ``rehearsal shadow`` left some: per-request correctness
    of each arm on the labelled requests (``live["correct"]``), all of them and the safety-tagged ones,
    judged by the staging rule (``staging_verdict``) with the gate's margin. A shadow is paired request by
    request; a canary's arms hold different requests. Same return as :func:`staging_check`; codes
    ``<mode>:all`` / ``<mode>:safety`` (and ``<mode>-unproven:...``)."""
    mode = str(live["mode"])
    summary: dict[str, dict[str, float]] = {}
    codes, reasons, verdicts = [], [], []
    rng = np.random.default_rng(seed)
    for part in ("all", "safety"):
        arms = live["correct"].get(part)
        if not arms or not len(arms["candidate"]) or not len(arms["current"]):
            continue
        row = compare_arms(
            np.asarray(arms["candidate"], dtype=bool),
            np.asarray(arms["current"], dtype=bool),
            paired=mode == "shadow",
            rng=rng,
            n_boot=gate.n_boot,
            confidence=gate.confidence,
        )
        summary[part] = _rounded(row)
        verdict = staging_verdict(row, gate.margin)
        verdicts.append(verdict)
        if verdict != PASS:
            codes.append(f"{mode if verdict == FAIL else mode + '-unproven'}:{part}")
            what = "requests" if part == "all" else "safety-tagged requests"
            reasons.append(_staging_reason(f"{mode} on {what}", row, gate, verdict))
    return summary, codes, reasons, worst_decision(verdicts)


def _signed(value: float) -> str:
    """``value`` as a signed change to 3 places, never "-0.000" (a zero change has no direction)."""
    text = f"{value:+.3f}"
    return "+0.000" if text == "-0.000" else text


def _margin(margin: float) -> str:
    """The gate's margin as the lowest change it accepts: "-0.05", or "0" for none (not "-0.0")."""
    return f"-{margin:g}" if margin > 0 else "0"


def _staging_reason(what: str, row: Mapping[str, float], gate: GateConfig, verdict: str) -> str:
    interval = f"{gate.confidence:.0%} interval [{_signed(row['low'])}, {_signed(row['high'])}]"
    margin = _margin(gate.margin)
    if verdict == FAIL:
        return f"staging: {what} changed {_signed(row['delta'])}, worse than the margin {margin} ({interval})"
    return (
        f"staging: {what} changed {_signed(row['delta'])}, within the margin {margin}, but its {interval} "
        "reaches past it, so these examples cannot show the change is within it: a person must approve"
    )


def worst_decision(verdicts: Sequence[str]) -> str:
    """The strictest of gate decisions: fail over needs-approval over pass."""
    return FAIL if FAIL in verdicts else NEEDS_APPROVAL if NEEDS_APPROVAL in verdicts else PASS


def _rounded(row: Mapping[str, float]) -> dict[str, float]:
    return {key: round(float(value), 6) for key, value in row.items()}


def run_id_for(comparable_config: Mapping[str, Any]) -> str:
    """A run's id: the digest of its config minus where it writes, so a resumed run keeps its id."""
    return "run-" + config_digest(comparable_config)[:16]


def update_id(run_id: str, phase: int) -> str:
    """The id of one phase's update, the one ``rehearsal approve`` names."""
    return f"{run_id}/phase-{phase}"


@dataclass(frozen=True)
class UpdateRecord:
    """One update to govern: which it is, what it trained, and the evidence the gate weighs.

    ``before`` and ``after``: accuracy per task measured before and after the update (``before`` holds the
    tasks trained earlier). ``staged``: per earlier task, which held-out examples the current version and
    the candidate got right (same examples, same order), for the staging comparison. ``live``: a shadow's
    or canary's per-request results (:func:`live_check`). ``flags``: (code, reason) pairs a caller's own
    checks raised, each of which needs approval. ``hold_for_approval``: an update that needs approval
    keeps its entries (a staged candidate waiting for ``rehearsal approve`` and a second promote); a
    failed one is always undone.
    """

    id: str  # the update id ``rehearsal approve`` names (a run's: :func:`update_id`)
    actor: str  # who made it, as the audit log records it: the run id, or "deployment"
    config: Mapping[str, Any]
    task_names: Sequence[str]
    weights: Path
    after: Mapping[str, float]
    before: Mapping[str, float] = field(default_factory=dict)
    staged: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None
    live: Mapping[str, Any] | None = None
    flags: Sequence[tuple[str, str]] = ()
    seed: int = 0
    hold_for_approval: bool = False


@dataclass
class _Verdict:
    """What the gate made of an update: its decision, the codes and reasons behind it, who approved it."""

    decision: str = UNGATED
    reasons: list[str] = field(default_factory=list)
    codes: list[str] = field(default_factory=list)
    approver: str | None = None
    staging: dict[str, dict[str, float]] | None = None
    live: dict[str, dict[str, float]] | None = None


def govern_update(
    update: UpdateRecord,
    *,
    memory: RehearsalMemory,
    log: AuditLog,
    keys: KeyRing,
    gate: GateConfig | None,
    versions_seal: VersionsSeal | None = None,
) -> int:
    """Gate, then version and audit ``update`` (see the module docstring); returns the version number.

    ``memory`` is the open (writable) handle and ``log`` its audit log; ``keys`` key the data digest.
    ``versions_seal``: how the versions file is sealed (a deployment's; None: a run's plain file). Raises
    :class:`UpdateBlockedError` once the block is logged and undone.
    """
    added, evicted = memory.changes_since(last_audited_generation(log) or 0)
    texts = memory.get_texts(added) if added and not memory.embedding_only else []
    digest = _data_digest(keys, texts)
    verdict = _Verdict() if gate is None else _judge(update, gate, texts, log, digest)
    metrics = {f"accuracy/{safe_token(task)}": float(acc) for task, acc in update.after.items()}
    common: dict[str, Any] = {"run_id": update.id, "config": update.config, "data_ids": added}
    common.update(metrics=metrics, staging=verdict.staging, data_digest=digest, reasons=verdict.codes)
    common["actor"] = update.actor
    if verdict.live is not None:
        common["live"] = verdict.live
    if verdict.decision in (FAIL, NEEDS_APPROVAL):
        log_train_update(log, **common, decision=verdict.decision, approver=None)
        _undo_blocked(update, verdict, memory, log, added, evicted)
    tags = [f"task:{safe_token(t)}" for t in update.task_names]
    # One entry per committed batch (an online update admits batch by batch), each at its generation.
    for generation, ids in _added_by_generation(memory, last_audited_generation(log) or 0, added):
        log_ingest(log, ids, tenant="default", tags=tags, actor=update.actor, generation=generation)
    if evicted:
        log_delete(log, evicted, actor=update.actor, generation=memory.generation, cause="eviction")
    weights = str(update.weights.resolve())
    version = record_version(
        memory, weights=weights, config=update.config, update=update.id, seal=versions_seal
    )
    log_train_update(
        log,
        **common,
        decision=verdict.decision,
        approver=verdict.approver,
        version=version.version,
        id_boundary=version.id_boundary,
    )
    return version.version


def _added_by_generation(
    memory: RehearsalMemory, since: int, added: list[int]
) -> list[tuple[int, list[int]]]:
    """``added`` grouped by the generation that committed them, oldest first; the last group is dated the
    memory's generation now (what the log's reconciliation reads as audited)."""
    groups: list[tuple[int, list[int]]] = []
    left = set(added)
    for generation in range(since + 1, memory.generation + 1):
        still = set(memory.changes_since(generation)[0])
        batch = sorted(left - still)
        if batch:
            groups.append((generation, batch))
        left &= still
    if not groups or left:
        groups.append((memory.generation, sorted(left)))
    groups[-1] = (memory.generation, groups[-1][1])
    return groups


def _judge(update: UpdateRecord, gate: GateConfig, texts: list[str], log: AuditLog, digest: str) -> _Verdict:
    """The gate's regression and safety checks, then staging, live evidence and the caller's flags (each
    weighed only while nothing has failed), and an approval in the log for what needs one."""
    report = evaluate_gate(update.before, update.after, texts, [], gate)
    verdict = _Verdict(report.decision, list(report.reasons), [_safe_code(c) for c in report.codes])
    checks: list[tuple[list[str], list[str], str]] = []
    if verdict.decision != FAIL and update.staged:
        verdict.staging, more_codes, more_reasons, decision = staging_check(gate, update.staged, update.seed)
        checks.append((more_codes, more_reasons, decision))
    if verdict.decision != FAIL and update.live is not None:
        verdict.live, more_codes, more_reasons, decision = live_check(gate, update.live, update.seed)
        checks.append((more_codes, more_reasons, decision))
    if verdict.decision != FAIL and update.flags:
        checks.append(([c for c, _ in update.flags], [r for _, r in update.flags], NEEDS_APPROVAL))
    for more_codes, more_reasons, decision in checks:
        verdict.codes += more_codes
        verdict.reasons += more_reasons
        verdict.decision = worst_decision([verdict.decision, decision])
    if verdict.decision == NEEDS_APPROVAL:
        verdict.approver = approver_of(log, update.id, codes=verdict.codes, data_digest=digest)
        verdict.decision = PASS if verdict.approver is not None else NEEDS_APPROVAL
    return verdict


def _undo_blocked(
    update: UpdateRecord,
    verdict: _Verdict,
    memory: RehearsalMemory,
    log: AuditLog,
    added: list[int],
    evicted: list[int],
) -> NoReturn:
    """Undo a blocked update's admissions (unless it is held for approval), log it, and stop."""
    held = verdict.decision == NEEDS_APPROVAL and update.hold_for_approval
    if evicted and not held:  # erased records stay erased, blocked or not
        log_delete(log, evicted, actor=update.actor, generation=memory.generation, cause="eviction")
    if added and not held:
        memory.delete(added)
        log_delete(log, added, actor=update.actor, generation=memory.generation, cause="blocked-update")
    raise UpdateBlockedError(
        f"update {update.id!r} was not promoted ({verdict.decision}): " + "; ".join(verdict.reasons),
        decision=verdict.decision,
        reasons=verdict.reasons,
        update=update.id,
        codes=verdict.codes,
    )


def _safe_code(code: str) -> str:
    """A gate code (``regression:<task>``) with its name part made loggable."""
    kind, _, name = code.partition(":")
    return f"{kind}:{safe_token(name)}" if name else kind


def _data_digest(keys: KeyRing, texts: Sequence[str]) -> str:
    """A keyed digest of an update's texts: the same data gives the same digest across retraining (ids
    change, texts do not), and without the key it cannot be checked against guessed texts."""
    mac = hmac.new(keys.derive_key(_DATA_DIGEST_PURPOSE), digestmod=hashlib.sha256)
    for text in sorted(texts):
        mac.update(hashlib.sha256(text.encode("utf-8")).digest())
    return mac.hexdigest()[:32]


def approver_of(log: AuditLog, update: str, *, codes: Sequence[str], data_digest: str) -> str | None:
    """Who approved ``update`` for exactly these flags on exactly this data, per the (verified) log."""
    for entry in reversed(log.entries()):
        d = entry.details
        if entry.kind == "approve" and d.get("run_id") == update:
            same_data = d.get("data_digest") == data_digest
            if same_data and set(codes) <= set(d.get("codes") or ()):
                return str(d["approver"])
    return None


def awaiting_approval(log: AuditLog, update: str) -> dict[str, Any] | None:
    """The latest ``train-update`` entry on ``update`` if its decision is "needs-approval", else None."""
    for entry in reversed(log.entries()):
        if entry.kind == "train-update" and entry.details.get("run_id") == update:
            return dict(entry.details) if entry.details.get("decision") == "needs-approval" else None
    return None


def approve_update(log: AuditLog, update: str, approver: str) -> AuditEntry:
    """Record ``approver`` accepting the update the gate last flagged as ``update``. The approval names
    what it accepts, these flags on this data, so a retrained update whose data or flags differ needs a
    new one. ValidationError when the log holds no such update awaiting approval."""
    pending = awaiting_approval(log, update)
    if pending is None:
        raise ValidationError(f"the audit log has no update {update!r} awaiting approval")
    codes, digest = list(pending.get("reasons") or []), pending.get("data_digest")
    return approve(log, update, approver, codes=codes, data_digest=digest)
