"""A causal-LM run end to end through ``rehearsal run``: a tiny randomly initialised Llama learns three
skills in turn with replay; its matrix is read again from the saved adapters."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _models import tiny_causal_lm

from rehearsal.cli.main import main
from rehearsal.crypto.keys import KeyRing
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.runner.causal.model import causal_tokenizer, load_adapted
from rehearsal.runner.config import RunConfig
from rehearsal.runner.instructions import general_texts, load_instruction_stream
from rehearsal.runner.strategies.causal import measure_phase

SKILLS = ["pos", "antonym", "synonym"]
CAPS = {"max_train_per_class": 6, "max_test_per_class": 3}


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> str:
    stream = load_instruction_stream(tasks=SKILLS, **CAPS)
    texts = [ex.text for task in stream.tasks for ex in task.train + task.test]
    return tiny_causal_lm(tmp_path_factory.mktemp("tiny-llama"), [*texts, *general_texts()])


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, tiny_llama: str) -> tuple[Path, KeyRing]:
    folder = tmp_path_factory.mktemp("causal-run")
    keys = KeyRing.generate()
    (folder / "key").write_text(keys.export_base64())
    (folder / "key").chmod(0o600)
    config = {
        "model_kind": "causal-lm",
        "method": "random",
        "model": tiny_llama,
        "tasks": SKILLS,
        **CAPS,
        "batch_size": 4,
        "eval_batch_size": 8,
        "max_length": 32,
        "learning_rate": 0.01,
        "epochs": 3.0,
        "progress": False,
        "output_dir": str(folder / "run"),
    }
    (folder / "run.json").write_text(json.dumps(config))
    assert main(["run", str(folder / "run.json"), "--key-file", str(folder / "key"), "--json"]) == 0
    return folder / "run", keys


@pytest.mark.slow
def test_a_causal_lm_run_scores_every_skill_after_every_phase(finished: tuple[Path, KeyRing]) -> None:
    out, _ = finished
    results = json.loads((out / "results.json").read_text())
    matrix = np.array(results["accuracy"]["matrix"], dtype=float)
    assert results["accuracy"]["task_names"] == SKILLS
    assert matrix.shape == (3, 3)
    assert np.all((matrix >= 0) & (matrix <= 1))
    assert matrix.max() > 0.0  # it learnt something, so the read-out from the adapters can disagree
    assert results["summary"]["forgetting"] is not None
    logs = results["phase_logs"]
    assert len(logs) == 3
    for row, log in enumerate(logs):
        assert log["general_perplexity"] > 1.0
        for j, skill in enumerate(SKILLS):
            assert log[f"f1/{skill}"] == pytest.approx(matrix[row, j])
            assert 0.0 <= log[f"exact/{skill}"] <= log[f"f1/{skill}"] + 1e-9
            assert log[f"answer_loss/{skill}"] > 0.0
    assert logs[0]["general_perplexity_base"] > 1.0
    assert results["cost"]["replayed_examples"] > 0


@pytest.mark.slow
def test_the_matrix_is_recomputed_from_the_saved_adapters(
    finished: tuple[Path, KeyRing], tiny_llama: str
) -> None:
    out, _ = finished
    results = json.loads((out / "results.json").read_text())
    config = RunConfig.from_dict(results["config"])
    stream = load_instruction_stream(tasks=SKILLS, **CAPS)
    tokenizer = causal_tokenizer(tiny_llama)
    for phase in range(len(SKILLS)):
        model = load_adapted(tiny_llama, out / "weights" / f"phase_{phase}", trainable=False)
        scores = measure_phase(model, tokenizer, config, stream.tasks)
        again = [float(scores[t].f1.mean()) for t in SKILLS]
        assert again == pytest.approx(results["accuracy"]["matrix"][phase], abs=1e-9)


@pytest.mark.slow
def test_no_test_item_enters_the_memory(finished: tuple[Path, KeyRing]) -> None:
    out, keys = finished
    stream = load_instruction_stream(tasks=SKILLS, **CAPS)
    with RehearsalMemory.open(out / "memory", keys=keys, read_only=True) as memory:
        stored = set(memory.get_texts(memory.ids()))
    assert stored == {ex.text for task in stream.tasks for ex in task.train}
    assert not stored & {ex.text for task in stream.tasks for ex in task.test}


@pytest.mark.slow
def test_compare_sets_causal_methods_side_by_side(tmp_path: Path, tiny_llama: str) -> None:
    key = tmp_path / "key"
    key.write_text(KeyRing.generate().export_base64())
    key.chmod(0o600)
    config = {
        "model_kind": "causal-lm",
        "model": tiny_llama,
        "tasks": SKILLS[:2],
        "max_train_per_class": 4,
        "max_test_per_class": 2,
        "batch_size": 4,
        "max_length": 32,
        "progress": False,
        "output_dir": str(tmp_path / "sweep"),
    }
    (tmp_path / "sweep.json").write_text(json.dumps(config))
    args = ["compare", str(tmp_path / "sweep.json"), "--methods", "naive,retrieval", "--key-file", str(key)]
    assert main([*args, "--json"]) == 0
    table = json.loads((tmp_path / "sweep" / "comparison.json").read_text())
    assert set(table["table"]) == {"naive", "retrieval"}
    for method in ("naive", "retrieval"):
        logs = json.loads((tmp_path / "sweep" / method / "seed0" / "results.json").read_text())["phase_logs"]
        assert [sorted(k for k in log if k.startswith("f1/")) for log in logs] == [
            ["f1/antonym", "f1/pos"]
        ] * 2


@pytest.mark.slow
def test_per_skill_adapters_keep_the_first_skill_that_routing_finds(tmp_path: Path, tiny_llama: str) -> None:
    config = RunConfig(
        model_kind="causal-lm",
        method="lora-routed",
        model=tiny_llama,
        tasks=SKILLS,
        max_train_per_class=CAPS["max_train_per_class"],
        max_test_per_class=CAPS["max_test_per_class"],
        batch_size=4,
        eval_batch_size=8,
        max_length=32,
        learning_rate=0.01,
        epochs=8.0,
        progress=False,
        output_dir=str(tmp_path / "routed"),
    )
    from rehearsal.runner.loop import run

    result = run(config, keys=KeyRing.generate())
    matrix = result.matrix.matrix
    assert result.phase_logs[-1]["routing_accuracy"] >= 0.8
    # The "pos" prompts all reach the pos adapter, which later phases never train: its score stays put.
    assert matrix[0, 0] > 0.0
    assert matrix[1, 0] == matrix[0, 0]
    assert matrix[2, 0] == matrix[0, 0]
    manifest = json.loads((tmp_path / "routed" / "weights" / "phase_2" / "adapters.json").read_text())
    assert manifest["tasks"] == [f"task_{s}" for s in SKILLS]


def _two_skills(model: str, method: str, out: Path) -> RunConfig:
    """A small causal-LM run of the first two skills, four items each."""
    return RunConfig(
        model_kind="causal-lm",
        method=method,
        model=model,
        tasks=SKILLS[:2],
        max_train_per_class=4,
        max_test_per_class=2,
        batch_size=4,
        max_length=32,
        progress=False,
        output_dir=str(out),
    )


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ewc", "hybrid", "multitask"])
def test_other_methods_run_a_causal_lm_through_the_stream(
    tmp_path: Path, tiny_llama: str, method: str
) -> None:
    from rehearsal.runner.loop import run

    result = run(_two_skills(tiny_llama, method, tmp_path / method), keys=KeyRing.generate())
    assert result.summary["average_accuracy"] is not None
    assert "general_perplexity" in result.phase_logs[-1]
    if method == "ewc":
        assert result.phase_logs[0]["ewc_mean_fisher"] > 0.0
        saved = sorted((tmp_path / method).rglob("ewc.pt"))  # beside the adapter weights it belongs to
        assert saved
        assert all(path.parent.parent.name == "weights" for path in saved)


@pytest.mark.slow
def test_self_rehearsal_replays_old_prompts_with_the_models_own_answers(
    tmp_path: Path, tiny_llama: str
) -> None:
    from rehearsal.runner.causal.collator import CompletionCollator
    from rehearsal.runner.causal.evaluate import greedy_answers
    from rehearsal.runner.causal.self_rehearsal import SelfRehearsalCollator, own_answers, prompt_of
    from rehearsal.runner.loop import run

    keys = KeyRing.generate()
    out = tmp_path / "self"
    result = run(_two_skills(tiny_llama, "self-rehearsal", out), keys=keys)
    first, second = result.phase_logs
    assert first["self_answers"] == 0.0  # nothing old to answer before the first skill
    assert second["self_answers"] == 4.0  # the first skill's four training prompts
    assert result.cost.replayed_examples > 0

    tokenizer = causal_tokenizer(tiny_llama)
    with RehearsalMemory.open(out / "memory", keys=keys, read_only=True) as memory:
        groups = memory.group_ids("task")
        old = sorted(int(i) for i in groups[SKILLS[0]])
        stored = memory.texts_by_id(old)
        # The answers phase 1 replayed are phase 0's model's greedy answers to the old prompts.
        model = load_adapted(tiny_llama, out / "weights" / "phase_0", trainable=False)
        written = own_answers(model, tokenizer, memory, old_tasks=[SKILLS[0]], batch_size=8)
        prompts = [prompt_of(stored[i]) for i in old]
        answers = greedy_answers(model, tokenizer, prompts, batch_size=8)
        assert [written[i] for i in old] == [
            f"{p}\nAnswer: {a}" for p, a in zip(prompts, answers, strict=True)
        ]
        # The collator replays the written text where it has one, the stored text elsewhere.
        newer = sorted(int(i) for i in groups[SKILLS[1]])
        collator = SelfRehearsalCollator(
            memory,
            CompletionCollator(tokenizer, max_length=32),
            tokenizer,
            answers={old[0]: "Q\nAnswer: mine"},
        )
        texts = collator.replay_texts(memory, [old[0], newer[0]])
        assert texts[old[0]] == "Q\nAnswer: mine"
        assert texts[newer[0]] == memory.texts_by_id([newer[0]])[newer[0]]
