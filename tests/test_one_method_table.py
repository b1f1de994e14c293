"""Run methods are listed once: ``rehearsal.runner.methods.METHOD_TABLE``. The registries agree with its
columns, and no other module of the package spells out a list of method names (a second list is how the
three lists of the past drifted apart)."""

from __future__ import annotations

import ast
from pathlib import Path

import rehearsal
from rehearsal.runner.methods import MEMORYLESS_METHODS, METHOD_TABLE, METHODS, REPLAY_METHODS
from rehearsal.runner.strategies import get_strategy

NAMES = {m.name for m in METHOD_TABLE}
ROOT = Path(rehearsal.__file__).parent


def lists_of_method_names(source: str) -> list[int]:
    """Line numbers of tuple/list/set literals holding three or more method names."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            names = [e.value for e in node.elts if isinstance(e, ast.Constant) and e.value in NAMES]
            if len(set(names)) >= 3:
                found.append(node.lineno)
    return found


# Replay modes share names with methods ("random", "retrieval", ...): their one list is REPLAY_MODES, which
# the registry of rehearsal.replay.modes is held to (tests/test_selection_modes.py).
ALLOWED = {"runner/methods.py", "config.py"}


def test_no_module_but_the_table_lists_method_names() -> None:
    offenders = {
        path.relative_to(ROOT).as_posix(): lines
        for path in ROOT.rglob("*.py")
        for lines in [lists_of_method_names(path.read_text(encoding="utf-8"))]
        if lines
    }
    assert set(offenders) - ALLOWED == set()


def test_the_scan_finds_a_planted_second_list() -> None:
    assert lists_of_method_names('ONLINE = ("naive", "random", "retrieval")\n') == [1]
    assert lists_of_method_names('PAIR = ("naive", "random")\n') == []


def test_the_classifier_registry_agrees_with_the_table() -> None:
    for name in METHODS:
        strategy = get_strategy(name)
        assert strategy.uses_memory == (name not in MEMORYLESS_METHODS), name
        assert strategy.class_means_from_memory == (name in REPLAY_METHODS), name
