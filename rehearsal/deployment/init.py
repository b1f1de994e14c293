"""Making a deployment (``rehearsal init-deployment``) from a model and a memory, or from a finished run
(``from_run``: what ``rehearsal.runner.handoff.run_handoff`` reads out of the run's folder).

The memory is copied into the deployment (with its audit log, whose chain goes on). The regression suite
is, in order of preference: ``suite`` (a JSON-lines file of held-out examples), a run's test sets, or
``heldout`` of the memory's own entries per task and label, moved out of the memory (logged deletes).
The first version is the base model trained on what the memory holds with the deployment's strategy
(a run's own weights are not reused: their format is the run method's, not the deployment's).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from rehearsal.crypto.keys import KeyRing
from rehearsal.deployment.config import DeploymentConfig
from rehearsal.deployment.evaluate import score, timed_latency
from rehearsal.deployment.examples import (
    data_digest,
    read_examples,
    split_heldout,
    to_memory,
)
from rehearsal.deployment.folder import Deployment, VersionState
from rehearsal.deployment.model import DeployedModel
from rehearsal.deployment.result import UpdateResult, deployment_keys
from rehearsal.deployment.strategies import get_deployment_strategy
from rehearsal.deployment.training import train_candidate
from rehearsal.errors import NotFoundError, ValidationError
from rehearsal.examples import Example
from rehearsal.governance.audited import AuditedMemory
from rehearsal.governance.updates import UpdateRecord, govern_update
from rehearsal.governance.versions import start_sealed
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.store.layout import is_memory_folder
from rehearsal.training.handoff import RunHandoff

__all__ = ["init_deployment"]


def _memory_examples(memory: RehearsalMemory, names: list[str] | None) -> tuple[list[int], list[Example]]:
    """The memory's labelled entries as examples; int labels become ``names[label]`` (a run's ids)."""
    ids = memory.ids()
    rows = memory.entries(ids)
    keep = [i for i in ids if rows[i].label is not None]
    texts = memory.get_texts(keep)
    out = []
    for i, text in zip(keep, texts, strict=True):
        label = rows[i].label
        name = names[label] if names is not None and isinstance(label, int) else str(label)
        out.append(Example(text, name, rows[i].task or "default", tags=rows[i].tags))
    return keep, out


def _label_order(memory: RehearsalMemory, examples: list[Example], names: list[str] | None) -> list[str]:
    """Head outputs in an order that keeps the memory's int labels equal to their output index."""
    if names is not None:
        return list(names)
    raw = [row.label for row in memory.entries(memory.ids()).values() if row.label is not None]
    ints = [label for label in raw if isinstance(label, int)]
    if ints:
        if len(ints) != len(raw) or min(ints) < 0:
            raise ValidationError("the memory mixes int and str labels (or has negative ones); use one kind")
        return [str(i) for i in range(max(ints) + 1)]
    return sorted({str(ex.label) for ex in examples})


def init_deployment(
    path: str | os.PathLike[str],
    *,
    memory: str | os.PathLike[str] | None = None,
    from_run: RunHandoff | None = None,
    model: str | None = None,
    strategy: str = "adapter-replay",
    suite: str | os.PathLike[str] | None = None,
    keys: KeyRing | None = None,
    options: dict[str, Any] | None = None,
) -> UpdateResult:
    """Make the deployment folder ``path`` and its first version (see the module docstring)."""
    keys = deployment_keys(keys)
    if (memory is None) == (from_run is None):
        raise ValidationError("give exactly one of a memory folder and a finished run's folder")
    names: list[str] | None = None
    tests: list[Example] = []
    if from_run is not None:
        source, names, model = from_run.memory, list(from_run.labels), model or from_run.model
        tests = list(from_run.tests)
    else:
        source = Path(str(memory))
        if not is_memory_folder(source):
            raise NotFoundError(f"{str(source)!r} holds no memory (no memory.json)")
    config = DeploymentConfig.from_dict({**(options or {}), "strategy": strategy, "model": model})
    folder = Path(path)
    existed = folder.exists()
    dep = Deployment.create(path, config, keys)
    try:
        return _first_version(dep, source, names, tests, suite)
    except BaseException:
        # A bad model or suite found only now must not leave a half-made folder that blocks the retry.
        _remove_half_made(folder, existed)
        raise


def _remove_half_made(folder: Path, existed: bool) -> None:
    """Remove what a failed init made: the folder, or (when it existed, empty) what it holds now."""
    if not existed:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _first_version(
    dep: Deployment,
    source: Path,
    names: list[str] | None,
    tests: list[Example],
    suite: str | os.PathLike[str] | None,
) -> UpdateResult:
    """Copy the memory in, cut the suite, train and record the first version (init's body)."""
    config, keys = dep.config, dep.keys
    strategy = get_deployment_strategy(config.strategy)
    shutil.copytree(source, dep.memory_path)
    # The source's versions name weights the deployment does not have: its own start here, sealed.
    start_sealed(dep.memory_path, dep.versions_seal)
    with dep.open_memory() as mem:
        audited = AuditedMemory(mem, dep.log(), actor="deployment")
        ids, examples = _memory_examples(mem, names)
        if not examples:
            raise ValidationError(f"the memory {str(source)!r} holds no labelled entries to train on")
        labels = _label_order(mem, examples, names)
        examples, tests = _cut_suite(audited, config, ids, examples, tests, suite)
        unknown = sorted({str(ex.label) for ex in tests} - set(labels))
        if unknown:
            raise ValidationError(f"the suite has labels the memory does not: {unknown[:10]}")
        tasks = _labels_by_task(examples)
        uid = "init-" + data_digest(examples)
        experts = strategy.first_experts(tasks)
        state = VersionState(update=uid, labels=labels, tasks=tasks, experts=experts)
        weights = dep.weights_dir(uid)
        first = DeployedModel.load(config, state, None)
        adapter = strategy.first_adapter
        train_candidate(
            first,
            [ex.text for ex in examples],
            [str(ex.label) for ex in examples],
            np.zeros((len(examples), mem.dim), dtype=np.float32),  # no replay: the vectors go unused
            memory=mem,
            adapter=adapter,
            replay_where=None,
            ewc_state=None,
            ewc_out=strategy.ewc_file(weights),
        )
        # The suite embeds as the memory does, so the two compare (and a bf16 memory gets a bf16 suite).
        with RehearsalMemory.create(dep.suite_path, keys=keys, encoder=mem.encoder) as suite_mem:
            to_memory(suite_mem, tests)
            state.suite_boundary = (max(suite_mem.ids()) + 1) if tests else 0
        state.metrics = _first_metrics(first, tests, mem)
        dep.save_version(first, weights)
        record = UpdateRecord(
            id=uid,
            actor="deployment",
            config=config.to_dict(),
            task_names=sorted(tasks),
            weights=weights,
            after=state.metrics["accuracy"],
        )
        seal = dep.versions_seal
        number = govern_update(record, memory=mem, log=audited.log, keys=keys, gate=None, versions_seal=seal)
    return UpdateResult(uid, "pass", number, adapter if experts else None, None, state.metrics)


def _cut_suite(
    audited: AuditedMemory,
    config: DeploymentConfig,
    ids: list[int],
    examples: list[Example],
    tests: list[Example],
    suite: str | os.PathLike[str] | None,
) -> tuple[list[Example], list[Example]]:
    """(training examples, test suite): the suite file when one is given, the tests handed in, or else a
    held-out share of the memory's examples, which then leave the memory (they must not be trained on)."""
    if suite is not None:
        return examples, read_examples(suite)
    if tests:
        return examples, tests
    train, held = split_heldout(examples, config.heldout, rng=np.random.default_rng(config.seed))
    kept = set(held)
    audited.delete([i for i, ex in zip(ids, examples, strict=True) if ex in kept])
    return train, held


def _labels_by_task(examples: list[Example]) -> dict[str, list[str]]:
    """Each task's labels in order of first appearance."""
    tasks: dict[str, list[str]] = {}
    for ex in examples:
        if ex.label not in tasks.setdefault(ex.task, []):
            tasks[ex.task].append(str(ex.label))
    return tasks


def _first_metrics(first: DeployedModel, tests: list[Example], mem: RehearsalMemory) -> dict[str, Any]:
    """The first version's numbers on the suite, as every later version records them."""
    scored = score(first, tests, mem)
    return {
        "accuracy": scored.accuracy_by_task(),
        "safety": scored.accuracy_by_tag(first.config.safety_tags),
        "latency": timed_latency(first, tests, mem),
        "examples": len(tests),
        "memory_entries": len(mem),
    }
