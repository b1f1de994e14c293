"""Every module path an error or a warning tells a user to import exists (issue 29: a message once sent
users to ``rehearsal.trainer.RehearsalTrainer``, which never existed)."""

from __future__ import annotations

import ast
import importlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "rehearsal"
DOTTED = re.compile(r"\brehearsal(?:\.[A-Za-z_][A-Za-z0-9_]*)+")


def _message_strings(tree: ast.AST) -> Iterator[str]:
    """The string pieces of every ``raise`` and every ``warn(...)`` call."""
    for node in ast.walk(tree):
        is_warning = (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "warn"
        )
        if isinstance(node, ast.Raise) or is_warning:
            for part in ast.walk(node):
                if isinstance(part, ast.Constant) and isinstance(part.value, str):
                    yield part.value


def named_paths() -> list[tuple[str, str]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for text in _message_strings(tree):
            for match in DOTTED.finditer(text):
                found.append((path.relative_to(PACKAGE.parent).as_posix(), match.group().rstrip(".")))
    return found


def resolves(dotted: str) -> bool:
    """``dotted`` is a module, or a module followed by attributes it has."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            if not hasattr(target, name):
                return False
            target = getattr(target, name)
        return True
    return False


def test_messages_name_module_paths_at_all() -> None:
    """The scan finds the paths it is meant to check (a scan that finds nothing cannot fail)."""
    assert ("rehearsal/replay/collator.py", "rehearsal.replay.trainer.RehearsalTrainer") in named_paths()


@pytest.mark.parametrize(("source", "dotted"), sorted(set(named_paths())))
def test_every_module_path_in_a_message_imports(source: str, dotted: str) -> None:
    assert resolves(dotted), f"{source} tells users to use {dotted}, which does not import"


def test_a_path_that_does_not_exist_is_caught() -> None:
    assert not resolves("rehearsal.trainer.RehearsalTrainer")
