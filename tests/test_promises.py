"""Tests that guard promises a deliberate bug once slipped past: each was seen to fail with its bug planted.

Replay never serves the task being trained (the collator's filter, the run strategies' own filter), the
uniform random share delivers the count asked for, a run's accuracy matrix scores every task against its
own labels, the PII scorer counts a finding only under its own kind, an audit entry's data digest depends
on the data, and ``rehearsal bench`` reports the recall it measured.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rehearsal as rh
from rehearsal.replay.selector import ReplaySelector

DIM = 16
TASKS = ("old_a", "old_b", "current")
PER_TASK = 40


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def centres() -> np.ndarray:
    return _unit(np.random.default_rng(0).normal(size=(len(TASKS), DIM)))


@pytest.fixture(scope="module")
def keys() -> rh.KeyRing:
    return rh.KeyRing.generate()


@pytest.fixture(scope="module")
def mixed_memory(tmp_path_factory: pytest.TempPathFactory, keys: rh.KeyRing, centres: np.ndarray) -> Path:
    """A memory holding two old tasks and the current one: replay must choose among the old ones only."""
    rng = np.random.default_rng(1)
    path = tmp_path_factory.mktemp("mixed") / "memory"
    with rh.RehearsalMemory.create(path, keys=keys, dim=DIM, encoder_name="synthetic") as memory:
        for t, task in enumerate(TASKS):
            vectors = _unit(centres[t] + 0.1 * rng.normal(size=(PER_TASK, DIM)))
            memory.add(
                [f"{task} gloss number {i}" for i in range(PER_TASK)],
                vectors=vectors,
                metadata=[{"task": task, "label": 2 * t + i % 2} for i in range(PER_TASK)],
            )
    return path


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    from rehearsal.embedding import default_model_path

    return AutoTokenizer.from_pretrained(str(default_model_path()))


def _features(tokenizer: Any, vectors: np.ndarray, task: str) -> list[dict[str, Any]]:
    """A batch of new examples as a Trainer hands them to the collator: tokens, label, vector, text, task."""
    rows = []
    for i, vector in enumerate(vectors):
        text = f"new {task} example {i}"
        rows.append({**tokenizer(text), "label": 4, "embedding": vector.tolist(), "text": text, "task": task})
    return rows


def _near(centres: np.ndarray, task: str, n: int, seed: int) -> np.ndarray:
    """New examples close to ``task``'s stored entries (so nearest neighbours would be that task's)."""
    centre = centres[TASKS.index(task)]
    return _unit(centre + 0.1 * np.random.default_rng(seed).normal(size=(n, DIM)))


def _replayed_tasks(path: Path, keys: rh.KeyRing, ids: list[int]) -> set[str]:
    with rh.RehearsalMemory.open(path, keys=keys, read_only=True) as memory:
        return {str(row.task) for row in memory.entries(sorted(set(ids))).values()}


@pytest.mark.parametrize("mode", ["retrieval", "random", "hybrid"])
def test_collator_with_task_never_replays_that_task_from_a_memory_holding_it(
    mixed_memory: Path, keys: rh.KeyRing, tokenizer: Any, centres: np.ndarray, mode: str
) -> None:
    from transformers import DataCollatorWithPadding

    collator = rh.RehearsalCollator(
        mixed_memory,
        DataCollatorWithPadding(tokenizer),
        tokenizer,
        rh.ReplayConfig(mode=mode, ratio=0.75, k=8),
        keys=keys,
        task="current",
    )
    replayed: list[int] = []
    for seed in range(4):
        batch = collator(_features(tokenizer, _near(centres, "current", 8, seed), "current"))
        assert len(batch["input_ids"]) == 8 + 24
        replayed += collator.last_replay_ids
    assert len(replayed) == 4 * 24
    assert _replayed_tasks(mixed_memory, keys, replayed) <= {"old_a", "old_b"}


def _phase_context(
    stream: rh.TaskStream, tasks: tuple[Any, ...], memory: Path, keys: rh.KeyRing, tokenizer: Any, mode: str
) -> Any:
    from transformers import DataCollatorWithPadding

    from rehearsal.runner.strategies.base import PhaseContext

    config = rh.RunConfig(
        tasks=[t.name for t in stream.tasks],
        replay=rh.ReplayConfig(ratio=0.75, k=8, random_share=0.5),
        progress=False,
    )
    return PhaseContext(
        config=config,
        stream=stream,
        phase=0,
        tasks=tasks,
        train=None,
        tokenizer=tokenizer,
        base_collator=DataCollatorWithPadding(tokenizer),
        memory_path=memory,
        keys=keys,
        current_classes=[],
        seen_classes=[],
        memory=rh.RehearsalMemory.open(memory, keys=keys, read_only=True),
    )


@pytest.mark.parametrize("method", ["random", "retrieval", "hybrid"])
@pytest.mark.parametrize("phase_tasks", [("current",), ("old_b", "current")])
def test_run_strategy_replays_none_of_the_phase_tasks(
    mixed_memory: Path,
    keys: rh.KeyRing,
    tokenizer: Any,
    centres: np.ndarray,
    method: str,
    phase_tasks: tuple[str, ...],
) -> None:
    from rehearsal.runner.strategies.base import get_strategy
    from rehearsal.runner.tasks import Example, Task

    tasks = [Task.from_examples(name, [Example(f"{name} text", f"{name}.label", name)], []) for name in TASKS]
    stream = rh.TaskStream.from_tasks(tasks)
    phase = tuple(t for t in tasks if t.name in phase_tasks)
    context = _phase_context(stream, phase, mixed_memory, keys, tokenizer, method)
    collator = get_strategy(method).collator(context)
    replayed: list[int] = []
    with context.memory:
        for seed in range(3):
            collator(_features(tokenizer, _near(centres, "current", 8, 10 + seed), "current"))
            replayed += collator.last_replay_ids  # type: ignore[attr-defined]
    assert replayed
    assert not _replayed_tasks(mixed_memory, keys, replayed) & set(phase_tasks)


@pytest.mark.parametrize("seed", range(20))
def test_uniform_random_share_returns_exactly_the_count_asked(
    mixed_memory: Path, keys: rh.KeyRing, seed: int
) -> None:
    # The case: 60 of the 80 eligible old entries (the current task's 40 are filtered out).
    with rh.RehearsalMemory.open(mixed_memory, keys=keys, read_only=True) as memory:
        selector = ReplaySelector(
            memory,
            rh.ReplayConfig(mode="random", balance="uniform"),
            eligible={"task": {"$ne": "current"}},
        )
        batch = _unit(np.random.default_rng(seed).normal(size=(4, DIM)))
        choice = selector.select(batch, 60, rng=np.random.default_rng(seed))
        assert len(choice) == len(set(choice.ids)) == 60
        assert {m["task"] for m in choice.metadata.values()} == {"old_a", "old_b"}
        # Asking for more than is eligible gives everything eligible, once each.
        everything = selector.select(batch, 200, rng=np.random.default_rng(seed))
        assert sorted(everything.ids) == sorted(memory.ids({"task": {"$ne": "current"}}))


def test_class_balanced_random_share_is_even_across_labels_and_exact(
    mixed_memory: Path, keys: rh.KeyRing
) -> None:
    # 80 eligible entries in 4 labels of 20.
    with rh.RehearsalMemory.open(mixed_memory, keys=keys, read_only=True) as memory:
        selector = ReplaySelector(
            memory, rh.ReplayConfig(mode="random", balance="class"), eligible={"task": {"$ne": "current"}}
        )
        for count in (70, 80):
            choice = selector.select(np.zeros((1, DIM), np.float32), count, rng=np.random.default_rng(3))
            labels = [choice.metadata[i]["label"] for i in choice.ids]
            assert len(set(choice.ids)) == count
            per_label = np.bincount(labels, minlength=4)
            assert per_label.max() - per_label.min() <= 1, per_label
            # Every label is drawn once before any is drawn twice.
            assert sorted(labels[:4]) == [0, 1, 2, 3]


@pytest.mark.slow
@pytest.mark.usefixtures("master_key")
def test_a_run_scores_every_task_against_its_own_labels(
    tmp_path: Path, tiny_model: str, tiny_stream: rh.TaskStream
) -> None:
    """The run's last accuracy row equals one recomputed here from the saved weights' own predictions."""
    import torch
    from _models import tiny_run_config
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rehearsal.runner import loop as stream_module

    # Enough epochs that the last task is learnt and the first forgotten: the rows then differ by task.
    config = tiny_run_config(tmp_path, tiny_model, method="naive", epochs=8, learning_rate=5e-3)
    result = stream_module.run(config, stream=tiny_stream)
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "run" / "weights" / "phase_1")
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    recomputed = []
    for task in tiny_stream.tasks:
        right = 0
        for example in task.test:
            encoded = tokenizer(
                example.text, truncation=True, max_length=config.max_length, return_tensors="pt"
            )
            with torch.inference_mode():
                predicted = int(model(**encoded).logits[0].argmax())
            right += predicted == tiny_stream.labels.index(example.label)
        recomputed.append(right / len(task.test))
    assert result.matrix.matrix[-1] == pytest.approx(recomputed)
    # Scoring a task against another task's labels (disjoint classes) would give these different rows.
    assert len(set(recomputed)) > 1, recomputed


def test_pii_score_counts_a_finding_only_under_its_own_kind() -> None:
    from rehearsal.governance.pii import scan, score

    text = "write to ana.lopez@example.org today"
    (finding,) = scan(text)
    assert finding.kind == "email"
    right = score([(text, [("email", finding.start, finding.end)])])
    wrong = score([(text, [("phone", finding.start, finding.end)])])
    assert (right["email"]["tp"], right["email"]["fp"], right["email"]["fn"]) == (1, 0, 0)
    # The scanner found an email where the label says phone: a missed phone and a spurious email.
    assert (wrong["phone"]["tp"], wrong["phone"]["fn"], wrong["email"]["fp"]) == (0, 1, 1)
    assert wrong["phone"]["recall"] == 0.0
    assert wrong["email"]["precision"] == 0.0


def test_audit_entries_digest_the_ids_they_record(tmp_path: Path, keys: rh.KeyRing) -> None:
    from rehearsal.governance.audit_log import AuditLog, ids_digest
    from rehearsal.governance.audited import log_ingest, log_train_update

    assert ids_digest([1, 2, 3]) != ids_digest([1, 2, 4])
    assert ids_digest([1, 2, 3]) != ids_digest([1, 23])
    log = AuditLog.open(tmp_path / "audit.log", keys)
    updates = [
        log_train_update(log, run_id="r", config={"lr": 1}, data_ids=ids, metrics={}, decision="pass")
        for ids in ([3, 1, 2], [1, 2, 3], [1, 2, 4])
    ]
    digests = [u.details["data_ids_hash"] for u in updates]
    assert digests[0] == digests[1] != digests[2]
    ingests = [log_ingest(log, ids, tenant="acme") for ids in ([5, 6, 7], [5, 6, 8])]
    assert ingests[0].details["ids_hash"] != ingests[1].details["ids_hash"]
    assert (ingests[0].details["first_id"], ingests[0].details["last_id"]) == (5, 7)
    assert log.verify() == 5


def test_bench_reports_the_recall_it_measured_on_an_inexact_index(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An IVF index probing 1 list of 16 misses neighbours; bench must say so, matching a count made here."""
    from rehearsal.cli.main import main
    from rehearsal.store.faiss.index import FaissIndex

    rng = np.random.default_rng(0)
    centres = _unit(rng.normal(size=(8, DIM)))
    vectors = _unit(centres[rng.integers(0, 8, 400)] + 0.35 * rng.normal(size=(400, DIM)))
    path = tmp_path / "ivf"
    with rh.RehearsalMemory.create(path, embedding_only=True, dim=DIM) as memory:
        ids = memory.add(vectors=vectors, sources=[f"s{i}" for i in range(len(vectors))])
        index = FaissIndex.build(vectors, ids, spec="IVF16,Flat")
        index.nprobe = 1
        memory._vectors.index = index
        memory._vectors.write_snapshot()
    k = 5
    # Every stored vector is a query (so the seeded choice of queries does not matter), its own id left out.
    exact = np.argsort(-(vectors @ vectors.T), axis=1)[:, 1 : k + 1]
    _, found = index.search(vectors, k + 1)
    own = np.arange(len(vectors))
    recall = np.mean([len(set(f[f != i]) & set(e)) / k for f, e, i in zip(found, exact, own, strict=True)])
    assert 0.3 < recall < 0.95  # genuinely inexact
    assert main(["bench", str(path), "--queries", "400", "-k", str(k), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["index"], report["nprobe"], report["queries"]) == ("IVF16,Flat", 1, 400)
    assert report["recall_at_k"] == pytest.approx(recall)


def _audit_log(folder: Path, keys: rh.KeyRing, tenant: str) -> Any:
    from rehearsal.governance.audit_log import AuditLog
    from rehearsal.governance.audited import log_ingest

    folder.mkdir()
    log = AuditLog.open(folder / "audit.log", keys)
    for i in range(4):
        log_ingest(log, [i], tenant=tenant)
    return log


@pytest.mark.parametrize("line", [0, 1, 3])
def test_an_entry_from_another_log_under_the_same_key_breaks_the_chain(
    tmp_path: Path, keys: rh.KeyRing, line: int
) -> None:
    """Its seq is right and its MAC is genuine: only the link to the entry before it gives it away."""
    ours = _audit_log(tmp_path / "ours", keys, "acme")
    theirs = _audit_log(tmp_path / "theirs", keys, "globex")
    spliced = ours.path.read_bytes().splitlines(keepends=True)
    spliced[line] = theirs.path.read_bytes().splitlines(keepends=True)[line]
    ours.path.write_bytes(b"".join(spliced))
    # The first entry has no predecessor to contradict it: the next entry's link names it instead; the
    # last one has no successor, and its own link is what breaks.
    broken = line + 2 if line == 0 else line + 1
    with pytest.raises(rh.IntegrityError, match=rf"line {broken} .*'prev' does not match .*chain broken"):
        ours.verify()


def test_a_whole_log_swapped_for_another_under_the_same_key_is_refused_by_the_head(
    tmp_path: Path, keys: rh.KeyRing
) -> None:
    ours = _audit_log(tmp_path / "ours", keys, "acme")
    theirs = _audit_log(tmp_path / "theirs", keys, "globex")
    ours.path.write_bytes(theirs.path.read_bytes())
    with pytest.raises(rh.IntegrityError, match="does not match the hash in the head file"):
        ours.verify()
