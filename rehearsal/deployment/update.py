"""One governed update of a deployment from new labelled examples (``rehearsal update`` / ``rh.update``).

1. read the examples, hold ``heldout`` of each task and label back as that task's regression suite;
2. plan the training (the strategy's ``plan``); for expert growth, score the new data's novelty
   against the memory (``rehearsal.methods.novelty``) and log the score and the decision (a new expert
   and router entry, or the experts that already hold the batch's tasks, each trained on its own rows);
3. train a candidate from the deployed version (``training.train_candidate``), with replay;
4. score the deployed version on every old task's suite examples; the new examples enter the memory;
   score the candidate on the same and the new held-out ones (routed over the memory it will be
   deployed with), the safety-tagged ones and their latency;
5. the existing gate decides (``govern_update``: regression, PII, paired-bootstrap staging, and
   ``evaluate.unlearned_tasks``: a new task no better than chance needs approval): "pass" records a
   version that becomes current; "fail" or
   "needs-approval" is logged, the entries leave the memory again and :class:`UpdateBlockedError` is
   raised. With ``stage`` a passing candidate waits in ``pending.json`` for ``rehearsal shadow`` and
   :func:`promote`, which runs the same governance plus the shadow's or canary's per-request results
   (``rehearsal.governance.updates.live_check``): a candidate worse than the deployed version on live
   requests by more than the gate's margin fails, one with too few requests to show it needs approval.
   A staged candidate that needs approval stays staged (its entries in the memory): ``rehearsal
   approve`` records the person, and a second :func:`promote` ships it.

An update is named by its data (``update-<digest>``): a file retried after ``rehearsal approve`` meets
its approval. ``rehearsal.deployment.online_update`` cuts a stream into updates gated on a cadence.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rehearsal.crypto.keys import KeyRing
from rehearsal.deployment.evaluate import score, timed_latency, unlearned_tasks
from rehearsal.deployment.examples import (
    data_digest,
    read_examples,
    split_heldout,
    suite_examples,
    to_memory,
)
from rehearsal.deployment.experts import Part, log_novelty
from rehearsal.deployment.folder import Deployment, VersionState
from rehearsal.deployment.model import DeployedModel
from rehearsal.deployment.result import UpdateResult, deployment_keys
from rehearsal.deployment.rollback import rollback
from rehearsal.deployment.stage_failure import discard_failed_stage
from rehearsal.deployment.staged import StagedCandidate
from rehearsal.deployment.strategies import get_deployment_strategy
from rehearsal.deployment.training import train_candidate
from rehearsal.errors import ConfigError, IntegrityError, UpdateBlockedError, ValidationError
from rehearsal.examples import Example
from rehearsal.governance.audit_log import AuditLog, safe_token
from rehearsal.governance.audited import last_audited_generation, reconcile_log
from rehearsal.governance.gate import NEEDS_APPROVAL, evaluate_gate
from rehearsal.governance.updates import (
    UpdateRecord,
    approve_update,
    govern_update,
    staging_check,
    worst_decision,
)
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.methods.inference import embed_texts

# UpdateResult, deployment_keys and rollback are re-exported: callers of update() and promote() import
# them here.

__all__ = ["UpdateResult", "approve", "deployment_keys", "promote", "rollback", "update"]


def _grown_state(state: VersionState, uid: str, examples: list[Example], capacity: int) -> VersionState:
    labels = list(state.labels)
    for ex in examples:
        if ex.label is not None and ex.label not in labels:
            labels.append(ex.label)
    if len(labels) > capacity:
        raise ConfigError(
            f"the update brings labels beyond the head's {capacity} outputs (max_labels); it would need "
            f"{len(labels)}: start a new deployment with a larger max_labels"
        )
    tasks = {t: list(v) for t, v in state.tasks.items()}
    for ex in examples:
        if ex.label is not None and ex.label not in tasks.setdefault(ex.task, []):
            tasks[ex.task].append(ex.label)
    experts = {e: list(v) for e, v in state.experts.items()}
    return VersionState(update=uid, labels=labels, tasks=tasks, experts=experts)


def _measure(
    dep: Deployment,
    current: DeployedModel,
    candidate: DeployedModel,
    old_suite: list[Example],
    held: list[Example],
    memory: RehearsalMemory,
    add_new: Callable[[], object],
) -> tuple[dict[str, float], dict[str, float], dict[str, tuple[np.ndarray, np.ndarray]], dict[str, Any]]:
    """(before, after, staged, metrics): accuracy per task of the current version and the candidate, the
    paired per-example results on old tasks, and the candidate's metrics for its version state.
    ``add_new`` puts the update's examples into the memory between the two: the current version answers
    over the memory it was deployed with, the candidate over the one it will be deployed with (expert
    growth routes by the memory, so a new expert gets no request before its task's entries are in it)."""
    tags = dep.config.safety_tags
    now = score(current, old_suite, memory)
    add_new()
    cand = score(candidate, [*old_suite, *held], memory)
    cand_old = dataclasses.replace(cand, correct=cand.correct[: len(old_suite)], examples=old_suite)
    before = now.accuracy_by_task()
    after = cand.accuracy_by_task()
    staged = {t: (now.by_task()[t], cand_old.by_task()[t]) for t in before}
    metrics = {
        "accuracy": after,
        "safety": cand.accuracy_by_tag(tags),
        "latency": timed_latency(candidate, [*old_suite, *held], memory),
        "examples": len(held),
    }
    return before, after, staged, metrics


def update(
    path: str | os.PathLike[str],
    data: str | os.PathLike[str] | list[Example],
    *,
    keys: KeyRing | None = None,
    task: str = "default",
    stage: bool | None = None,
    admit_batch: int | None = None,
) -> UpdateResult:
    """One governed update of the deployment in ``path`` from the examples in ``data`` (a file, or the
    examples read already; see the module docstring). ``admit_batch``: the examples enter the memory in
    batches of this many, each its own commit and audit entry (an online update). Raises
    :class:`UpdateBlockedError` when the gate does not pass it."""
    dep = Deployment.open(path, deployment_keys(keys))
    _refuse_while_staged(dep)
    examples = data if isinstance(data, list) else read_examples(data, task=task)
    uid = "update-" + data_digest(examples)
    version, state = dep.current()
    new_state = _grown_state(state, uid, examples, dep.config.max_labels)
    rng = np.random.default_rng([dep.config.seed, version.version])
    train, held = split_heldout(examples, dep.config.heldout, rng=rng)
    new_tasks = sorted({ex.task for ex in examples})
    weights = dep.weights_dir(uid, fresh=True)
    with dep.open_memory() as memory, dep.open_suite() as suite:
        log = dep.log()
        reconcile_log(memory, log, actor="deployment")  # what committed unaudited is logged first
        vectors = embed_texts([ex.text for ex in train], memory.encoder)
        parts = _plan(dep, memory, new_state, vectors, [ex.task for ex in train], log, uid)
        current = DeployedModel.load(dep.config, state, Path(version.weights))
        candidate = DeployedModel.load(dep.config, new_state, Path(version.weights))
        trained = _train_parts(dep, candidate, parts, train, vectors, memory, Path(version.weights), weights)
        old_suite = suite_examples(suite, list(state.tasks))
        generation_before = memory.generation
        admit = functools.partial(_admit, memory, train, vectors, candidate, admit_batch)
        before, after, staged, metrics = _measure(dep, current, candidate, old_suite, held, memory, admit)
        flags = unlearned_tasks(new_state, before, after, held) if dep.config.check_learning else []
        suite_ids = _into_suite(suite, held, new_state)
        new_state.metrics = {**metrics, "memory_entries": len(memory), "training": trained}
        dep.save_version(candidate, weights)
        if stage if stage is not None else dep.config.stage:
            result = _stage(
                dep, uid, new_state, before, after, staged, generation_before, memory, log, suite_ids, flags
            )
            if result.gate_preview is None or result.gate_preview["decision"] != "fail":
                return result
            raise discard_failed_stage(
                dep,
                memory,
                suite,
                log,
                uid=uid,
                preview=result.gate_preview,
                generation_before=generation_before,
                suite_ids=suite_ids,
                new_labels=[label for label in new_state.labels if label not in state.labels],
            )
        number = _govern(
            dep, memory, log, suite, uid, new_tasks, weights, before, after, staged, suite_ids, flags=flags
        )
    expert = new_state.novelty.get("expert") if new_state.novelty else None
    return UpdateResult(uid, "pass", number, expert, new_state.novelty, new_state.metrics)


def _plan(
    dep: Deployment,
    memory: RehearsalMemory,
    state: VersionState,
    vectors: np.ndarray,
    tasks: list[str],
    log: AuditLog,
    uid: str,
) -> list[Part]:
    """The training parts for the examples of ``tasks`` (the strategy's plan); for expert growth, the new
    data's novelty, kept in the candidate's ``state`` and logged."""
    strategy = get_deployment_strategy(dep.config.strategy)
    parts, state.novelty = strategy.plan(dep.config, memory, state.experts, vectors, tasks)
    if state.novelty is not None:
        log_novelty(log, uid, state.novelty)
    return parts


def _admit(
    memory: RehearsalMemory,
    train: list[Example],
    vectors: np.ndarray,
    candidate: DeployedModel,
    batch: int | None,
) -> None:
    """The new examples enter the memory (in commits of ``batch``, all at once when None); the
    candidate's router learns them."""
    step = batch or max(len(train), 1)
    for start in range(0, len(train), step):
        to_memory(memory, train[start : start + step], vectors[start : start + step])
    candidate.fit_router(memory)


def _into_suite(suite: RehearsalMemory, held: list[Example], state: VersionState) -> list[int]:
    """The update's held-out examples join the test suite (their ids returned); the candidate's ``state``
    records where the suite ends."""
    suite_ids = to_memory(suite, held)
    every = suite.ids()
    state.suite_boundary = (max(every) + 1) if every else 0
    return suite_ids


def _refuse_while_staged(dep: Deployment) -> None:
    """One candidate at a time: a staged one is promoted or rolled back before the next update."""
    staged_now = dep.pending()
    if staged_now is not None:
        raise ValidationError(
            f"a candidate ({staged_now.update}) is staged: promote it or roll back before updating again"
        )


def _train_parts(
    dep: Deployment,
    candidate: DeployedModel,
    parts: Sequence[Part],
    train: Sequence[Example],
    vectors: np.ndarray,
    memory: RehearsalMemory,
    current_weights: Path,
    weights: Path,
) -> dict[str, float]:
    """Train the candidate one part at a time (one pass per adapter: expert growth with a batch of several
    experts' tasks); returns the parts' numbers summed. EWC reads the current version's state and writes
    the candidate's beside its ``weights``."""
    strategy = get_deployment_strategy(dep.config.strategy)
    trained: dict[str, float] = {}
    for part in parts:
        numbers = train_candidate(
            candidate,
            [train[i].text for i in part.rows],
            [str(train[i].label) for i in part.rows],
            vectors[part.rows],
            memory=memory,
            adapter=part.adapter,
            replay_where=part.replay_where,
            ewc_state=strategy.ewc_file(current_weights),
            ewc_out=strategy.ewc_file(weights),
        )
        for key, value in numbers.items():
            trained[key] = trained.get(key, 0.0) + value
    return trained


def _govern(
    dep: Deployment,
    memory: RehearsalMemory,
    log: AuditLog,
    suite: RehearsalMemory,
    uid: str,
    tasks: list[str],
    weights: Path,
    before: dict[str, float],
    after: dict[str, float],
    staged: dict[str, tuple[np.ndarray, np.ndarray]],
    suite_ids: list[int],
    live: dict[str, Any] | None = None,
    staged_candidate: bool = False,
    flags: list[tuple[str, str]] | None = None,
) -> int:
    try:
        record = UpdateRecord(
            id=uid,
            actor="deployment",
            config=dep.config.to_dict(),
            task_names=tasks,
            weights=weights,
            before=before,
            after=after,
            staged={t: pair for t, pair in staged.items() if len(pair[0])},
            seed=dep.config.seed,
            live=live,
            flags=flags or [],
            hold_for_approval=staged_candidate,
        )
        return govern_update(
            record,
            memory=memory,
            log=log,
            keys=dep.keys,
            gate=dep.config.gate,
            versions_seal=dep.versions_seal,
        )
    except UpdateBlockedError as blocked:
        if staged_candidate and blocked.decision == NEEDS_APPROVAL:
            raise  # it stays staged, entries and all, until approved or rolled back
        # The blocked candidate's held-out examples leave the suite too; its weights are not kept.
        if suite_ids:
            suite.delete(suite_ids)
        shutil.rmtree(weights, ignore_errors=True)
        raise


def _stage(
    dep: Deployment,
    uid: str,
    state: VersionState,
    before: dict[str, float],
    after: dict[str, float],
    staged: dict[str, tuple[np.ndarray, np.ndarray]],
    generation_before: int,
    memory: RehearsalMemory,
    log: AuditLog,
    suite_ids: list[int],
    flags: list[tuple[str, str]],
) -> UpdateResult:
    """Keep a candidate for shadowing; report what the gate would say now (it decides at promote)."""
    preview = evaluate_gate(before, after, [], [], dep.config.gate)
    codes, decision = list(preview.codes), preview.decision
    if decision != "fail" and flags:
        codes += [code for code, _ in flags]
        decision = "needs-approval"
    if decision != "fail" and any(len(c) for c, _ in staged.values()):
        _, staging_codes, _, verdict = staging_check(
            dep.config.gate, {t: p for t, p in staged.items() if len(p[0])}, dep.config.seed
        )
        codes += staging_codes
        decision = worst_decision([decision, verdict])
    preview_now = {"decision": decision, "codes": [safe_token(c) for c in codes]}
    pending = StagedCandidate(
        update=uid,
        weights=str(dep.weights_dir(uid).relative_to(dep.path)),
        generation_before=generation_before,
        tasks=sorted(state.tasks),
        new_tasks=sorted(set(after) - set(before)),
        before=before,
        after=after,
        staged={t: [c.astype(int).tolist(), n.astype(int).tolist()] for t, (c, n) in staged.items()},
        suite_ids=suite_ids,
        flags=[list(flag) for flag in flags],
        gate_preview=preview_now,
    )
    dep.set_pending(pending)
    expert = state.novelty.get("expert") if state.novelty else None
    return UpdateResult(uid, "staged", None, expert, state.novelty, state.metrics, gate_preview=preview_now)


def promote(path: str | os.PathLike[str], *, keys: KeyRing | None = None) -> UpdateResult:
    """Run the governance on the staged candidate: a version, or :class:`UpdateBlockedError`."""
    dep = Deployment.open(path, deployment_keys(keys))
    pending = dep.pending()
    if pending is None:
        raise ValidationError(f"deployment {str(dep.path)!r} has no staged candidate to promote")
    weights = dep.candidate_weights(pending)
    state = dep.load_state(weights)
    staged = {
        t: (np.asarray(c, dtype=bool), np.asarray(n, dtype=bool)) for t, (c, n) in pending.staged.items()
    }
    with dep.open_memory() as memory, dep.open_suite() as suite:
        log = dep.log()
        if last_audited_generation(log) != pending.generation_before:
            raise IntegrityError(
                "the memory's audit log moved since the candidate was staged; roll back and update again"
            )
        try:
            number = _govern(
                dep,
                memory,
                log,
                suite,
                pending.update,
                pending.new_tasks or pending.tasks,
                weights,
                pending.before,
                pending.after,
                staged,
                list(pending.suite_ids),
                live=pending.live,
                staged_candidate=True,
                flags=[(str(code), str(reason)) for code, reason in pending.flags],
            )
        except UpdateBlockedError as blocked:
            if blocked.decision != NEEDS_APPROVAL:
                dep.set_pending(None)
            raise
    dep.set_pending(None)
    expert = state.novelty.get("expert") if state.novelty else None
    return UpdateResult(pending.update, "pass", number, expert, state.novelty, state.metrics)


def approve(
    path: str | os.PathLike[str], update_id: str, approver: str, *, keys: KeyRing | None = None
) -> int:
    """Record ``approver`` accepting the update the gate flagged (``rehearsal approve DIR UPDATE``);
    returns the audit entry's number. A staged candidate then ships with :func:`promote`, an unstaged
    update when its data is sent again (:func:`update`, which meets the approval)."""
    dep = Deployment.open(path, deployment_keys(keys))
    return approve_update(dep.log(), update_id, approver).seq
