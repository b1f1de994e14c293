"""The house rules of rehearsal/'s layering, read from the code's imports (AST; imports inside functions
and under TYPE_CHECKING count too), and of its sizes (modules and functions a reader can hold). Each rule
is also run on a small package with the fault planted, so a rule that could never fail would show here."""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import rehearsal

MASTER_KEY_ENV = "REHEARSAL_MASTER_KEY"
DATABASE_DRIVERS = ("sqlite3", "psycopg", "pymilvus")  # crypto reaches its rows through a protocol
HEAVY = ("torch", "transformers", "peft", "sentence_transformers", "datasets", "accelerate", "trl")
CONFIGS = ("rehearsal.config", "rehearsal.runner.config")
UTILITIES = ("rehearsal.errors", "rehearsal._files")
# Each folder imports only from the folders after it; folders grouped in one layer are siblings, which
# import neither each other nor anything above them (runner and deployment both train through training).
# The top-level modules (config, arithmetic, embedding, errors, _files) import from no folder. The
# package's __init__ (the public names) is the one module that gathers them all.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("cli",),
    ("runner", "deployment"),
    ("training",),
    ("governance",),
    ("replay",),
    ("methods",),
    ("memory",),
    ("store",),
    ("crypto",),
)
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 70  # def line to end line, as the AST has it


@dataclass
class Module:
    name: str
    internal: set[str] = field(default_factory=set)  # rehearsal modules it imports
    external: set[str] = field(default_factory=set)  # top-level names of other packages it imports
    key_env_mentions: int = 0  # string constants (docstrings aside) that name the master-key variable


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def read_package(root: Path) -> dict[str, Module]:
    """Every module under ``root`` (a package folder) with what it imports, wherever in the file."""
    names = {_module_name(root, p): p for p in root.rglob("*.py")}
    top = root.name
    modules: dict[str, Module] = {}
    for name, path in names.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        module = Module(name)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parent, base]).rstrip(".")
                # "from pkg import sub" imports the submodule pkg.sub when there is one.
                subs = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in names]
                targets = subs if len(subs) == len(node.names) else [base, *subs]
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module":
                if (
                    node.args
                    and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str)
                ):
                    targets = [node.args[0].value]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
                module.key_env_mentions += MASTER_KEY_ENV in node.value
            for target in targets:
                if target == top or target.startswith(top + "."):
                    while target not in names and "." in target:
                        target = target.rpartition(".")[0]
                    if target != name:
                        module.internal.add(target)
                else:
                    module.external.add(target.split(".")[0])
        modules[name] = module
    return modules


def _under(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def cycles(modules: dict[str, Module]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in modules[v].internal:
            if w not in modules:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for name in sorted(modules):
        if name not in index:
            visit(name)
    return found


def reachable(modules: dict[str, Module], start: str) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for nxt in modules[todo.pop()].internal:
            if nxt in modules and nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _folder(name: str) -> str | None:
    """The top folder a module lives in (``rehearsal.runner.loop`` -> ``runner``); None outside LAYERS."""
    parts = name.split(".")
    if len(parts) > 1 and any(parts[1] in layer for layer in LAYERS):
        return parts[1]
    return None


def _layer(name: str) -> int:
    folder = _folder(name)
    return next((i for i, layer in enumerate(LAYERS) if folder in layer), len(LAYERS))


def violations(modules: dict[str, Module], top: str = "rehearsal") -> list[str]:
    """Every broken rule, one line each (empty: the layering holds)."""
    bad = [f"import cycle: {' -> '.join(group)}" for group in cycles(modules)]
    for name, module in sorted(modules.items()):
        if name == top:
            continue
        for target in sorted(module.internal):
            if target != top and _layer(target) < _layer(name):
                bad.append(f"{name} imports {target}, a layer above it")
            elif _layer(target) == _layer(name) and _folder(target) not in (None, _folder(name)):
                bad.append(f"{name} imports {target}, a sibling folder of its layer")
    store, crypto = f"{top}.store", f"{top}.crypto"
    utilities = tuple(u.replace("rehearsal", top, 1) for u in UTILITIES)
    backends = (f"{top}.store.sqlite", f"{top}.store.faiss", f"{top}.store.postgres", f"{top}.store.milvus")
    for name, module in sorted(modules.items()):
        for target in sorted(module.internal):
            if _under(name, store) and not _under(target, store, crypto, *utilities):
                bad.append(f"{name} (store) imports {target}, above crypto and the utilities")
            if _under(target, *backends) and not _under(name, *backends, f"{top}.store.registry"):
                bad.append(f"{name} names the concrete backend {target}; only store.registry may")
            if _under(name, f"{top}.replay") and _under(target, f"{top}.store.faiss"):
                bad.append(f"{name} (replay) imports {target} (FAISS)")
            above_methods = (f"{top}.runner", f"{top}.deployment", f"{top}.governance")
            if _under(name, f"{top}.methods") and _under(target, *above_methods):
                bad.append(f"{name} (methods) imports {target}")
            if _under(target, f"{top}.cli") and not _under(name, f"{top}.cli"):
                bad.append(f"{name} imports {target}: nothing imports the CLI")
        if _under(name, f"{top}.replay") and "faiss" in module.external:
            bad.append(f"{name} (replay) imports faiss")
        for driver in sorted(module.external.intersection(DATABASE_DRIVERS)):
            if _under(name, crypto):
                bad.append(f"{name} (crypto) imports the database driver {driver}")
    mentions = sorted(name for name, module in modules.items() if module.key_env_mentions)
    if len(mentions) > 3:
        bad.append(f"{MASTER_KEY_ENV} is named in {len(mentions)} modules (at most 3): {mentions}")
    for config in (c.replace("rehearsal", top, 1) for c in CONFIGS):
        if config in modules:
            heavy = sorted(
                f"{dep} imports {ext}"
                for dep in reachable(modules, config)
                for ext in modules[dep].external
                if ext in HEAVY
            )
            if heavy:
                bad.append(f"{config} reaches torch-side imports: {heavy}")
    return bad


def test_rehearsal_keeps_its_layering() -> None:
    modules = read_package(Path(rehearsal.__file__).parent)
    assert len(modules) > 40  # the walk found the package
    assert violations(modules) == []


# -- each rule fails when broken -----------------------------------------------------------------------


def _plant(tmp_path: Path, files: dict[str, str]) -> dict[str, Module]:
    root = tmp_path / "rehearsal"
    base = {
        "__init__.py": "",
        "errors.py": "",
        "crypto/__init__.py": "",
        "crypto/keys.py": "from rehearsal.errors import X\n",
        "store/__init__.py": "",
        "store/registry.py": "from rehearsal.store.sqlite import records\n",
        "store/sqlite/__init__.py": "",
        "store/sqlite/records.py": "from rehearsal.crypto.keys import KeyRing\n",
        "store/faiss/__init__.py": "",
        "store/faiss/index.py": "import faiss\n",
        "memory/__init__.py": "",
        "memory/facade.py": "from rehearsal.store.registry import open_backends\n",
        "replay/__init__.py": "",
        "replay/selector.py": "from rehearsal.memory.facade import RehearsalMemory\n",
        "methods/__init__.py": "",
        "methods/ewc.py": "import torch\n",
        "governance/__init__.py": "",
        "governance/audit.py": "from rehearsal.crypto.keys import KeyRing\n",
        "runner/__init__.py": "",
        "runner/config.py": "from rehearsal.errors import ConfigError\n",
        "runner/loop.py": "from rehearsal.runner.config import C\nimport rehearsal.training.core\n",
        "cli/__init__.py": "",
        "training/__init__.py": "",
        "training/core.py": "from rehearsal.replay.selector import S\nimport rehearsal.methods.ewc\n",
        "deployment/__init__.py": "",
        "deployment/update.py": "from rehearsal.training.core import train\n",
        "cli/main.py": "from rehearsal.runner.loop import run\nfrom rehearsal.deployment.update import u\n",
        "config.py": "",
        **files,
    }
    for rel, text in base.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return read_package(root)


def test_the_planted_package_is_clean(tmp_path: Path) -> None:
    assert violations(_plant(tmp_path, {})) == []


_ASK_KEY = 'import os\n\ndef key():\n    return os.environ["REHEARSAL_MASTER_KEY"]\n'


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (  # a cycle hidden inside a function body
            {"crypto/keys.py": "def f():\n    from rehearsal.store.sqlite.records import SqliteRecords\n"},
            "import cycle",
        ),
        ({"store/sqlite/records.py": "from rehearsal.memory.facade import M\n"}, "above crypto"),
        ({"store/registry.py": "from rehearsal.config import C\n"}, "above crypto"),
        (
            {"memory/facade.py": "from rehearsal.store.sqlite.records import SqliteRecords\n"},
            "concrete backend",
        ),
        ({"replay/selector.py": "import faiss\n"}, "(replay) imports faiss"),
        ({"replay/selector.py": "from rehearsal.store.faiss.index import faiss_threads\n"}, "FAISS"),
        ({"methods/ewc.py": "from rehearsal.runner.loop import run\n"}, "(methods) imports"),
        ({"methods/ewc.py": "def f():\n    from rehearsal.governance import audit\n"}, "(methods) imports"),
        ({"runner/loop.py": "from rehearsal.cli.main import main\n"}, "nothing imports the CLI"),
        ({"memory/facade.py": "from rehearsal.replay.selector import S\n"}, "a layer above it"),
        ({"training/core.py": "from rehearsal.runner.config import RunConfig\n"}, "a layer above it"),
        (
            {"training/core.py": "def f():\n    from rehearsal.deployment.update import u\n"},
            "a layer above it",
        ),
        ({"deployment/update.py": "from rehearsal.runner.config import RunConfig\n"}, "sibling folder"),
        (
            {"runner/loop.py": "def f():\n    from rehearsal.deployment.update import update\n"},
            "sibling folder",
        ),
        ({"methods/ewc.py": "from rehearsal.deployment.update import update\n"}, "(methods) imports"),
        ({"config.py": "from rehearsal.crypto.keys import KeyRing\n"}, "a layer above it"),
        ({"runner/config.py": "from rehearsal.methods.ewc import EWC\n"}, "torch-side"),
        ({"crypto/keys.py": "import sqlite3\n"}, "(crypto) imports the database driver sqlite3"),
        ({f"m{i}.py": _ASK_KEY for i in range(4)}, "named in 4 modules"),
    ],
)
def test_a_broken_rule_is_reported(tmp_path: Path, files: dict[str, str], expected: str) -> None:
    found = violations(_plant(tmp_path, files))
    assert any(expected in line for line in found), found


def test_a_docstring_naming_the_key_variable_does_not_count(tmp_path: Path) -> None:
    files: dict[str, str] = {f"m{i}.py": '"""Reads REHEARSAL_MASTER_KEY."""\n' for i in range(5)}
    assert violations(_plant(tmp_path, files)) == []


# -- sizes ---------------------------------------------------------------------------------------------


def oversized(root: Path) -> list[str]:
    """Every module under ``root`` over MAX_MODULE_LINES lines and every function (or method) over
    MAX_FUNCTION_LINES, one line each (empty: every room is a size a reader can hold)."""
    bad = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        where = path.relative_to(root.parent)
        if len(text.splitlines()) > MAX_MODULE_LINES:
            bad.append(f"{where} has {len(text.splitlines())} lines (at most {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    bad.append(
                        f"{where}:{node.lineno} {node.name} has {length} lines (at most {MAX_FUNCTION_LINES})"
                    )
    return bad


def test_no_module_or_function_in_rehearsal_is_oversized() -> None:
    assert oversized(Path(rehearsal.__file__).parent) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("x = 1\n" * (MAX_MODULE_LINES + 1), f"has {MAX_MODULE_LINES + 1} lines"),
        ("def f():\n" + "    pass\n" * MAX_FUNCTION_LINES, f"f has {MAX_FUNCTION_LINES + 1} lines"),
        ("class C:\n    def m(self):\n" + "        pass\n" * MAX_FUNCTION_LINES, "m has"),
    ],
)
def test_an_oversized_module_or_function_is_reported(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "rehearsal").mkdir()
    (tmp_path / "rehearsal" / "big.py").write_text(text, encoding="utf-8")
    found = oversized(tmp_path / "rehearsal")
    assert any(expected in line for line in found), found


def test_rooms_at_the_limits_are_not_reported(tmp_path: Path) -> None:
    (tmp_path / "rehearsal").mkdir()
    body = "def f():\n" + "    pass\n" * (MAX_FUNCTION_LINES - 1)
    text = body + "x = 1\n" * (MAX_MODULE_LINES - MAX_FUNCTION_LINES)
    (tmp_path / "rehearsal" / "full.py").write_text(text, encoding="utf-8")
    assert oversized(tmp_path / "rehearsal") == []


# -- a memory's files are the store's ------------------------------------------------------------------
# The files rehearsal/store writes into a memory's folder; anything above the store asks it (is_memory_folder,
# peek_manifest) instead of naming them, so the folder's layout can change in one place.
STORE_FILES = frozenset({"memory.json", "memory.sqlite", "memory.gen", "writer.lock", "index.snap"})


def store_file_names(root: Path) -> list[str]:
    """``path:line name`` for every string constant outside ``root/store`` that is a memory's file name
    (docstrings and messages that merely mention one are longer strings, so they do not count)."""
    found = []
    for path in sorted(root.rglob("*.py")):
        if "store" in path.relative_to(root).parts[:1]:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in STORE_FILES:
                found.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.value}")
    return found


def test_nothing_above_the_store_names_a_memorys_file() -> None:
    assert store_file_names(Path(rehearsal.__file__).parent) == []


def test_a_memory_file_named_above_the_store_is_reported(tmp_path: Path) -> None:
    (tmp_path / "rehearsal" / "store").mkdir(parents=True)
    (tmp_path / "rehearsal" / "store" / "layout.py").write_text('DB = "memory.sqlite"\n', encoding="utf-8")
    (tmp_path / "rehearsal" / "cli.py").write_text(
        'import pathlib\nok = "no memory.json here"\nbad = pathlib.Path("m") / "memory.json"\n',
        encoding="utf-8",
    )
    assert store_file_names(tmp_path / "rehearsal") == ["rehearsal/cli.py:3 memory.json"]
