"""The EWC and LoRA run methods inside the real run loop: state between phases, isolation, resume.

Runs use the tiny BERT and the two-task WordNet stream of conftest.py; memories are real and encrypted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from _models import tiny_run_config

from rehearsal.crypto.keys import KeyRing
from rehearsal.errors import ConfigError
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.methods.adapters import TaskAdapters, adapter_of
from rehearsal.methods.ewc import EWC
from rehearsal.runner import loop as stream_module
from rehearsal.runner.strategies.lora import adapter_name
from rehearsal.runner.tasks import TaskStream

pytestmark = pytest.mark.usefixtures("master_key")


def _memory(out: Path) -> RehearsalMemory:
    return RehearsalMemory.open(out / "memory", keys=KeyRing.from_env("REHEARSAL_MASTER_KEY"), read_only=True)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ewc", "ewc-replay"])
def test_ewc_consolidates_after_every_phase_and_penalises_the_next(
    method: str, tmp_path: Path, tiny_model: str, tiny_stream: TaskStream, monkeypatch: pytest.MonkeyPatch
) -> None:
    penalties: list[float] = []
    before: dict[int, tuple[int, dict[str, torch.Tensor]]] = {}  # phase -> the state it trained against
    real_train = stream_module._train_phase

    def spying_train(model: Any, strategy: Any, ctx: Any, out: Path) -> Any:
        result = real_train(model, strategy, ctx, out)
        ewc = next(t for t in strategy.loss_terms(ctx) if isinstance(t, EWC))
        penalties.append(float(ewc.penalty(model).detach()))  # the trained model against the previous anchor
        before[ctx.phase] = (ewc.consolidations, {k: v.clone() for k, v in ewc.fisher.items()})
        return result

    monkeypatch.setattr(stream_module, "_train_phase", spying_train)
    result = stream_module.run(tiny_run_config(tmp_path, tiny_model, method=method), stream=tiny_stream)
    assert not (tmp_path / "run" / "ewc").exists()  # the state goes with the weights
    first_consolidations, first_fisher = before[1]
    second = EWC.load(tmp_path / "run" / "weights" / "phase_1" / "ewc.pt")
    assert (first_consolidations, second.consolidations) == (1, 2)
    assert result.config.ewc.lam == second.config.lam
    from transformers import AutoModelForSequenceClassification

    trained = AutoModelForSequenceClassification.from_pretrained(tmp_path / "run" / "weights" / "phase_1")
    assert set(second.fisher) == {name for name, _ in trained.named_parameters()}  # full fine-tuning
    for name, anchor in second.anchor.items():  # the anchor is the model the run went on with
        assert torch.equal(anchor, dict(trained.named_parameters())[name].detach().float())
    # gamma = 1: the Fisher after phase 1 is phase 0's plus a new, non-negative estimate.
    for name, fisher in second.fisher.items():
        assert torch.all(fisher >= first_fisher[name] - 1e-12)
    assert penalties[0] == 0.0  # nothing consolidated while the first task trains
    assert penalties[1] > 0.0  # the second task moved weights the first one's Fisher cares about
    assert all(log["ewc_mean_fisher"] > 0 for log in result.phase_logs)


@pytest.mark.slow
def test_a_governed_ewc_run_keeps_the_ewc_state_of_every_version(
    tmp_path: Path, tiny_model: str, tiny_stream: TaskStream
) -> None:
    stream_module.run(tiny_run_config(tmp_path, tiny_model, method="ewc-replay"), stream=tiny_stream)
    weights = tmp_path / "run" / "weights"
    states = [EWC.load(weights / f"phase_{p}" / "ewc.pt") for p in (0, 1)]
    # A rollback to the first version finds the state that version was trained to, not the latest.
    assert [s.consolidations for s in states] == [1, 2]
    assert not (tmp_path / "run" / "ewc").exists()


def test_a_run_saved_before_states_went_with_weights_reads_its_own_ewc_file(
    tmp_path: Path, tiny_stream: TaskStream
) -> None:
    from rehearsal.runner.config import RunConfig
    from rehearsal.runner.strategies import PhaseContext, get_strategy
    from rehearsal.runner.strategies.ewc import EWCMixin

    old = EWC()
    old.fisher, old.anchor, old.consolidations = {"w": torch.ones(2)}, {"w": torch.zeros(2)}, 1
    (tmp_path / "ewc").mkdir()
    old.save(tmp_path / "ewc" / "after_phase_0.pt")
    (tmp_path / "weights" / "phase_0").mkdir(parents=True)  # its checkpoint: weights, no ewc.pt
    ctx = PhaseContext(
        config=RunConfig(method="ewc"),
        stream=tiny_stream,
        phase=1,
        tasks=(tiny_stream.tasks[1],),
        train=None,
        tokenizer=None,
        base_collator=lambda f: f,
        memory_path=Path("unused"),
        keys=None,
        current_classes=[],
        seen_classes=[],
        output_dir=tmp_path,
    )
    strategy = get_strategy("ewc")
    assert isinstance(strategy, EWCMixin)
    strategy.restore_state(tmp_path / "weights" / "phase_0")
    (loaded,) = [t for t in strategy.loss_terms(ctx) if isinstance(t, EWC)]
    assert loaded.consolidations == 1
    assert torch.equal(loaded.fisher["w"], torch.ones(2))


def _adapter_state(adapters: TaskAdapters, name: str) -> dict[str, torch.Tensor]:
    return {
        pname: p.detach().clone()
        for pname, p in adapters.model.named_parameters()
        if adapter_of(pname) == name
    }


def _base_state(adapters: TaskAdapters) -> dict[str, torch.Tensor]:
    return {
        pname: p.detach().clone()
        for pname, p in adapters.model.named_parameters()
        if adapter_of(pname) is None
    }


@pytest.mark.slow
def test_lora_routed_trains_one_adapter_per_task_and_leaves_the_others_alone(
    tmp_path: Path, tiny_model: str, tiny_stream: TaskStream, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshots: list[dict[str, Any]] = []
    real_train = stream_module._train_phase

    def spying_train(model: Any, strategy: Any, ctx: Any, out: Path) -> Any:
        adapters = strategy.adapters
        first = adapter_name(tiny_stream.tasks[0].name)
        before = {"first": _adapter_state(adapters, first), "base": _base_state(adapters)}
        result = real_train(model, strategy, ctx, out)
        after = {"first": _adapter_state(adapters, first), "base": _base_state(adapters)}
        snapshots.append({"before": before, "after": after, "trainable": adapters.trainable_adapters()})
        return result

    monkeypatch.setattr(stream_module, "_train_phase", spying_train)
    config = tiny_run_config(tmp_path, tiny_model, method="lora-routed", learning_rate=1e-2)
    result = stream_module.run(config, stream=tiny_stream)
    names = [adapter_name(t.name) for t in tiny_stream.tasks]
    assert [s["trainable"] for s in snapshots] == [{names[0]}, {names[1]}]
    changed = [
        any(not torch.equal(s["before"]["first"][k], s["after"]["first"][k]) for k in s["after"]["first"])
        for s in snapshots
    ]
    assert changed == [True, False]  # the first adapter learns in its phase and is frozen in the next
    for s in snapshots:  # the base model never moves
        assert all(torch.equal(s["before"]["base"][k], v) for k, v in s["after"]["base"].items())
    manifest = json.loads((tmp_path / "run" / "weights" / "phase_1" / "adapters.json").read_text())
    assert manifest["tasks"] == names
    with _memory(tmp_path / "run") as memory:  # the router's memory: every phase's examples and tasks
        assert len(memory) == sum(len(t.train) for t in tiny_stream.tasks)
        assert set(memory.group_ids("task")) == {t.name for t in tiny_stream.tasks}
    assert result.cost.replayed_examples == 0


@pytest.mark.slow
def test_lora_routed_predicts_within_the_routed_tasks_classes(
    tmp_path: Path, tiny_model: str, tiny_stream: TaskStream, monkeypatch: pytest.MonkeyPatch
) -> None:
    predictions: list[tuple[list[str], Any]] = []
    from rehearsal.runner.strategies.lora import LoRARouted

    real_predict = LoRARouted.predict

    def spying_predict(self: LoRARouted, model: Any, ctx: Any, texts: Any) -> Any:
        out = real_predict(self, model, ctx, texts)
        predictions.append((list(texts), out))
        return out

    monkeypatch.setattr(LoRARouted, "predict", spying_predict)
    stream_module.run(tiny_run_config(tmp_path, tiny_model, method="lora-routed"), stream=tiny_stream)
    first_classes = {tiny_stream.label_id(label) for label in tiny_stream.tasks[0].labels}
    # After the first phase only the first task's adapter exists: every prediction is one of its classes.
    for _, labels in predictions[: len(tiny_stream.tasks)]:
        assert set(labels.tolist()) <= first_classes
    every_class = {tiny_stream.label_id(label) for label in tiny_stream.labels}
    assert all(set(labels.tolist()) <= every_class for _, labels in predictions)


@pytest.mark.slow
def test_lora_replay_shares_one_adapter_and_replays(
    tmp_path: Path, tiny_model: str, tiny_stream: TaskStream
) -> None:
    result = stream_module.run(
        tiny_run_config(tmp_path, tiny_model, method="lora-replay"), stream=tiny_stream
    )
    manifest = json.loads((tmp_path / "run" / "weights" / "phase_1" / "adapters.json").read_text())
    assert manifest["tasks"] == ["shared"]
    assert result.cost.replayed_examples > 0


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ewc-replay", "lora-routed", "lora-replay"])
def test_an_interrupted_run_resumes_to_the_same_results(
    method: str, tmp_path: Path, tiny_model: str, tiny_stream: TaskStream, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = stream_module.run(
        tiny_run_config(tmp_path / "whole", tiny_model, method=method), stream=tiny_stream
    )
    real_eval = stream_module._task_correct
    calls = {"eval": 0}

    def failing_eval(*args: Any, **kwargs: Any) -> Any:
        calls["eval"] += 1
        if calls["eval"] == len(tiny_stream.tasks) + 1:  # during the evaluation after phase 1
            raise KeyboardInterrupt
        return real_eval(*args, **kwargs)

    config = tiny_run_config(tmp_path / "cut", tiny_model, method=method)
    monkeypatch.setattr(stream_module, "_task_correct", failing_eval)
    with pytest.raises(KeyboardInterrupt):
        stream_module.run(config, stream=tiny_stream)
    monkeypatch.setattr(stream_module, "_task_correct", real_eval)
    resumed = stream_module.run(config, stream=tiny_stream, resume=True)
    assert resumed.matrix.to_dict()["matrix"] == whole.matrix.to_dict()["matrix"]


def test_lora_routed_refuses_a_phase_of_several_tasks(tiny_stream: TaskStream) -> None:
    from rehearsal.runner.config import RunConfig
    from rehearsal.runner.strategies import PhaseContext, get_strategy

    ctx = PhaseContext(
        config=RunConfig(method="lora-routed"),
        stream=tiny_stream,
        phase=0,
        tasks=tuple(tiny_stream.tasks),
        train=None,
        tokenizer=None,
        base_collator=lambda f: f,
        memory_path=Path("unused"),
        keys=None,
        current_classes=[],
        seen_classes=[],
    )
    with pytest.raises(ConfigError, match="one adapter per task"):
        get_strategy("lora-routed").adapter_for(ctx)  # type: ignore[attr-defined]
