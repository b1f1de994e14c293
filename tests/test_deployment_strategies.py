"""Deployment strategies are listed once: the registry of ``rehearsal.deployment.strategies``. The config and
the CLI read its names, no other module spells out a list of them, and each strategy answers what the
deployment code used to ask by comparing ``config.strategy`` with a name."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rehearsal
from rehearsal.crypto.keys import KeyRing
from rehearsal.deployment.config import DeploymentConfig
from rehearsal.deployment.experts import ALL, Part
from rehearsal.deployment.strategies import (
    DEPLOYMENT_STRATEGIES,
    SHARED,
    DeploymentStrategy,
    deployment_strategy_names,
    get_deployment_strategy,
)
from rehearsal.errors import ConfigError
from rehearsal.memory.facade import RehearsalMemory

NAMES = set(DEPLOYMENT_STRATEGIES)
ROOT = Path(rehearsal.__file__).parent
REGISTRY = "deployment/strategies.py"


def lists_of_strategy_names(source: str) -> list[int]:
    """Line numbers of tuple/list/set literals (and dict literals' keys) holding two or more strategy
    names."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            elements: list[ast.expr | None] = list(node.elts)
        elif isinstance(node, ast.Dict):
            elements = list(node.keys)
        else:
            continue
        names = {e.value for e in elements if isinstance(e, ast.Constant) and e.value in NAMES}
        if len(names) >= 2:
            found.append(node.lineno)
    return found


def test_the_registry_holds_the_three_strategies_default_first() -> None:
    assert deployment_strategy_names() == ("adapter-replay", "ewc", "expert-growth")
    assert deployment_strategy_names()[0] == DeploymentConfig().strategy


def test_no_module_but_the_registry_lists_strategy_names() -> None:
    offenders = {
        path.relative_to(ROOT).as_posix(): lines
        for path in ROOT.rglob("*.py")
        for lines in [lists_of_strategy_names(path.read_text(encoding="utf-8"))]
        if lines
    }
    assert set(offenders) - {REGISTRY} == set(), offenders


def test_the_scan_finds_a_planted_second_list() -> None:
    assert lists_of_strategy_names('KINDS = ("adapter-replay", "expert-growth")\n') == [1]
    assert lists_of_strategy_names('FIRST = {"adapter-replay": "shared", "expert-growth": "e0"}\n') == [1]
    assert lists_of_strategy_names('X = [1,\n ["ewc", "ewc", "naive"]]\n') == []  # one name, twice


def test_the_config_and_the_registry_import_without_torch() -> None:
    # A bad strategy in a deployment's config must fail in a second, before torch loads.
    heavy = ("torch", "transformers", "peft", "sentence_transformers", "datasets")
    probe = (
        "import sys; import rehearsal.deployment.config, rehearsal.deployment.strategies; "
        f"print([m for m in {heavy!r} if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "[]", done.stderr


def test_an_unknown_strategy_is_refused_naming_the_known_ones() -> None:
    known = r"\['adapter-replay', 'ewc', 'expert-growth'\]"
    with pytest.raises(ConfigError, match=rf"'strategy' must be one of {known}, got 'lora'"):
        get_deployment_strategy("lora")
    with pytest.raises(ConfigError, match=rf"'strategy' must be one of {known}, got 'lora'"):
        DeploymentConfig(strategy="lora")


def test_a_strategy_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"got \['ewc'\]"):
        DeploymentConfig.from_dict({"strategy": ["ewc"]})


def test_a_registered_strategy_is_one_the_config_accepts(monkeypatch: pytest.MonkeyPatch) -> None:
    class Planted(DeploymentStrategy):
        name = "planted"

    monkeypatch.setitem(DEPLOYMENT_STRATEGIES, "planted", Planted)
    assert DeploymentConfig(strategy="planted").strategy == "planted"
    assert isinstance(get_deployment_strategy("planted"), Planted)


def test_the_cli_offers_the_registered_strategies(monkeypatch: pytest.MonkeyPatch) -> None:
    from rehearsal.cli.main import UsageError, build_parser

    class Planted(DeploymentStrategy):
        name = "planted"

    monkeypatch.setitem(DEPLOYMENT_STRATEGIES, "planted", Planted)
    parser = build_parser()
    for name in ("planted", *deployment_strategy_names()):
        args = parser.parse_args(["init-deployment", "DIR", "--memory", "m", "--strategy", name])
        assert args.strategy == name
    monkeypatch.delitem(DEPLOYMENT_STRATEGIES, "planted")
    with pytest.raises(UsageError, match="invalid choice: 'planted'"):
        build_parser().parse_args(["init-deployment", "DIR", "--memory", "m", "--strategy", "planted"])


# -- each strategy's answers, as the deployment code had them by name ------------------------------------


@pytest.mark.parametrize(
    ("name", "first_adapter", "first_experts", "ewc", "whole", "shares"),
    [
        ("adapter-replay", SHARED, {}, False, False, True),
        ("ewc", None, {}, True, True, True),
        ("expert-growth", "expert_0", {"expert_0": ["a", "b"]}, False, False, False),
    ],
)
def test_each_strategy_answers_as_the_name_compares_did(
    name: str,
    first_adapter: str | None,
    first_experts: dict[str, list[str]],
    ewc: bool,
    whole: bool,
    shares: bool,
) -> None:
    strategy = get_deployment_strategy(name)
    assert strategy.name == name
    assert strategy.first_adapter == first_adapter
    assert strategy.first_experts({"b": ["x"], "a": ["y"]}) == first_experts
    assert strategy.keeps_ewc_state is ewc
    assert strategy.trains_whole_model is whole
    assert strategy.new_labels_share_old_weights is shares


def test_only_ewc_keeps_a_state_beside_its_weights(tmp_path: Path) -> None:
    assert get_deployment_strategy("ewc").ewc_file(tmp_path) == tmp_path / "ewc.pt"
    assert get_deployment_strategy("adapter-replay").ewc_file(tmp_path) is None
    assert get_deployment_strategy("expert-growth").ewc_file(tmp_path) is None


@pytest.mark.parametrize(("name", "adapter"), [("adapter-replay", SHARED), ("ewc", None)])
def test_one_set_of_weights_trains_on_every_example_with_replay_from_everything(
    name: str, adapter: str | None
) -> None:
    experts: dict[str, list[str]] = {}
    parts, details = get_deployment_strategy(name).plan(
        DeploymentConfig(strategy=name),
        # a plan with one set of weights does not read the memory
        None,  # type: ignore[arg-type]
        experts,
        np.zeros((3, 4), dtype=np.float32),
        ["a", "b", "a"],
    )
    assert parts == [Part(adapter, ALL, [0, 1, 2])]
    assert details is None
    assert experts == {}


def _memory(path: Path, encoder: Any, texts: dict[str, list[str]]) -> RehearsalMemory:
    memory = RehearsalMemory.create(path, keys=KeyRing.generate(), encoder=encoder)
    for task, rows in texts.items():
        memory.add(rows, metadata=[{"task": task, "label": "x"} for _ in rows])
    return memory


TEXTS = {
    "weather": ["rain is coming tomorrow", "sunny skies all week", "a storm hits the coast"],
    "cooking": ["simmer the sauce slowly", "knead the dough well", "roast the vegetables"],
}


def test_expert_growth_grows_its_first_expert_without_replay(tmp_path: Path, encoder: Any) -> None:
    experts: dict[str, list[str]] = {}
    tasks = ["weather", "weather"]
    with _memory(tmp_path / "mem", encoder, TEXTS) as memory:
        vectors = memory.encoder.encode(TEXTS["weather"][:2])
        parts, details = get_deployment_strategy("expert-growth").plan(
            DeploymentConfig(strategy="expert-growth"), memory, experts, vectors, tasks
        )
    assert parts == [Part("expert_0", None, [0, 1])]
    assert details is not None
    assert (details["decision"], details["expert"]) == ("new-expert", "expert_0")
    assert experts == {"expert_0": ["weather"]}


def test_expert_growth_trains_the_expert_holding_a_known_task_with_its_replay(
    tmp_path: Path, encoder: Any
) -> None:
    experts = {"expert_0": ["weather"], "expert_1": ["cooking"]}
    config = DeploymentConfig(strategy="expert-growth", novelty_threshold=1.0)  # nothing is novel
    with _memory(tmp_path / "mem", encoder, TEXTS) as memory:
        vectors = memory.encoder.encode(TEXTS["cooking"][:2])
        parts, details = get_deployment_strategy("expert-growth").plan(
            config, memory, experts, vectors, ["cooking", "cooking"]
        )
    assert parts == [Part("expert_1", {"task": {"$in": ["cooking"]}}, [0, 1])]
    assert details is not None
    assert (details["decision"], details["experts"]) == ("existing-expert", {"expert_1": ["cooking"]})
    assert experts == {"expert_0": ["weather"], "expert_1": ["cooking"]}
