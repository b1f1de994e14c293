"""One way to write a file that is read back (``rehearsal._files``): a crash mid-write leaves the previous
content, and no module writes a state file any other way. The rule is read from the code (AST) and also run
on a small package with the fault planted, so a rule that could never fail would show here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import rehearsal
from rehearsal import _files
from rehearsal._files import atomic_write, atomic_writer, create_new, replace_folder, write_json

# -- the shared writer under injected faults ------------------------------------------------------------


def _no_temps(folder: Path) -> bool:
    return not list(folder.glob(".*.tmp-*"))


@pytest.mark.parametrize("failing", ["replace", "fsync"])
def test_a_crash_mid_write_leaves_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    target = tmp_path / "state.json"
    write_json(target, {"completed_phases": 1})

    def crash(*args: object) -> None:
        raise OSError("injected: the disk went away")

    monkeypatch.setattr(_files.os, failing, crash)
    with pytest.raises(OSError, match="injected"):
        write_json(target, {"completed_phases": 2})
    assert _files.read_json(target) == {"completed_phases": 1}
    assert _no_temps(tmp_path)


def test_an_exception_inside_the_writer_leaves_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "ewc.pt"
    atomic_write(target, b"old")

    def cut_short() -> None:
        with atomic_writer(target) as f:
            f.write(b"new, but only")
            raise RuntimeError("half written")

    with pytest.raises(RuntimeError, match="half"):
        cut_short()
    assert target.read_bytes() == b"old"
    assert _no_temps(tmp_path)


def test_a_written_file_is_owner_only_and_complete(tmp_path: Path) -> None:
    target = tmp_path / "results.json"
    atomic_write(target, b"one ", memoryview(b"two"))
    assert target.read_bytes() == b"one two"
    assert target.stat().st_mode & 0o777 == 0o600


def test_create_new_never_overwrites(tmp_path: Path) -> None:
    target = tmp_path / "key"
    create_new(target, b"first")
    with pytest.raises(FileExistsError):
        create_new(target, b"second")
    assert target.read_bytes() == b"first"
    assert _no_temps(tmp_path)


def test_create_new_cut_short_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(*args: object) -> None:
        raise OSError("injected")

    monkeypatch.setattr(_files.os, "fsync", crash)
    with pytest.raises(OSError, match="injected"):
        create_new(tmp_path / "receipt.json", b"{}")
    assert list(tmp_path.iterdir()) == []


def test_replace_folder_puts_the_new_folder_in_place(tmp_path: Path) -> None:
    final, written = tmp_path / "phase_0", tmp_path / "phase_0.tmp"
    for folder, text in ((final, "old"), (written, "new")):
        (folder / "predictor").mkdir(parents=True)
        (folder / "predictor" / "meta.json").write_text(text)
    replace_folder(written, final)
    assert (final / "predictor" / "meta.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["phase_0"]


def test_ewc_state_cut_short_keeps_the_previous_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch = pytest.importorskip("torch")
    from rehearsal.methods.ewc import EWC, EWCConfig

    ewc = EWC(EWCConfig(lam=1.0))
    ewc.fisher, ewc.anchor = {"w": torch.ones(2)}, {"w": torch.zeros(2)}
    ewc.save(tmp_path / "ewc.pt")
    ewc.anchor = {"w": torch.full((2,), 5.0)}

    def crash(*args: object) -> None:
        raise OSError("injected")

    monkeypatch.setattr(_files.os, "replace", crash)
    with pytest.raises(OSError, match="injected"):
        ewc.save(tmp_path / "ewc.pt")
    assert torch.equal(EWC.load(tmp_path / "ewc.pt").anchor["w"], torch.zeros(2))
    assert _no_temps(tmp_path)


# -- the rule: nothing outside _files writes a file another way -----------------------------------------

# Writers outside rehearsal/_files.py that the rule accepts, by (module, kind), each with why.
ALLOWED: dict[tuple[str, str], str] = {
    ("runner/results.py", "write_text"): "results.md: a report for people, never read back",
    ("runner/compare.py", "write_text"): "comparison.md: a report for people, never read back",
    ("runner/plots.py", "savefig"): "plots: for people, never read back",
    ("deployment/report.py", "write_text"): "report.html: a page for people, never read back",
    ("cli/memory_verbs.py", "os.open"): "export: streamed to a new file (O_EXCL), removed if cut short",
    ("cli/memory_verbs.py", "os.fdopen"): "export: as above",
    ("governance/audit_log.py", "os.open"): "the audit log: appended and fsynced entry by entry, and locked",
    ("governance/audit_log.py", "open"): "the audit log: a torn last line (never acknowledged) cut off",
    ("store/sqlite/head.py", "os.open"): "the commit head: two slots rewritten in place, each self-checking",
    ("store/layout.py", "os.open"): "the writer lock file: no content",
    ("testing/postgres.py", "write_text"): "a throwaway test server's password file",
    ("testing/postgres.py", "open"): "a throwaway test server's postgresql.conf, appended",
    ("testing/milvus.py", "open"): "a throwaway test server's log",
}
_WRITE_MODES = set("wax+")
_WRITE_FLAGS = {"O_WRONLY", "O_RDWR", "O_CREAT", "O_APPEND", "O_TRUNC"}
_SERIALIZERS = {"torch.save": 1, "np.save": 0, "np.savez": 0, "np.savez_compressed": 0, "json.dump": 1}


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def _mode(call: ast.Call, position: int) -> str:
    given = next((k.value for k in call.keywords if k.arg == "mode"), None)
    if given is None and len(call.args) > position:
        given = call.args[position]
    return given.value if isinstance(given, ast.Constant) and isinstance(given.value, str) else "r"


def _in_memory_or_atomic(tree: ast.AST) -> set[str]:
    """Names a serializer may write to: ``with atomic_writer(...) as f`` or ``buffer = io.BytesIO()``."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.withitem) and isinstance(node.optional_vars, ast.Name):
            call = node.context_expr
            if isinstance(call, ast.Call) and _dotted(call.func).endswith("atomic_writer"):
                names.add(node.optional_vars.id)
        elif (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call)
            and _dotted(node.value.func).endswith("BytesIO")
        ):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def _kind(call: ast.Call, safe: set[str]) -> str | None:
    """What way of writing a file ``call`` is, or None when it writes no file (or writes through _files)."""
    name = _dotted(call.func)
    attr = name.rpartition(".")[2]
    if attr in ("write_text", "write_bytes"):
        return attr
    if name in ("os.replace", "os.rename", "shutil.move", "os.link") or attr == "rename":
        return name if name.startswith(("os.", "shutil.")) else "rename"
    if name == "os.open":
        flags = {n.attr for arg in call.args[1:2] for n in ast.walk(arg) if isinstance(n, ast.Attribute)}
        return "os.open" if flags & _WRITE_FLAGS else None
    if name in ("open", "os.fdopen") and _WRITE_MODES & set(_mode(call, 1)):
        return name
    if attr == "open" and isinstance(call.func, ast.Attribute) and _WRITE_MODES & set(_mode(call, 0)):
        return "open"
    target_at = _SERIALIZERS.get(name, 0 if attr == "savefig" else None)
    if target_at is None or len(call.args) <= target_at:
        return None
    target = call.args[target_at]
    if isinstance(target, ast.Name) and target.id in safe:
        return None
    return "savefig" if attr == "savefig" else name


def unlisted_writers(
    root: Path, allowed: dict[tuple[str, str], str]
) -> tuple[list[str], set[tuple[str, str]]]:
    """(``module:line kind`` of every file write outside ``_files.py`` not in ``allowed``, the allowed
    entries that were used)."""
    found: list[tuple[str, int, str]] = []
    used: set[tuple[str, str]] = set()
    for path in sorted(root.rglob("*.py")):
        module = path.relative_to(root).as_posix()
        if module == "_files.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        safe = _in_memory_or_atomic(tree)
        for node in ast.walk(tree):
            kind = _kind(node, safe) if isinstance(node, ast.Call) else None
            if kind is None:
                continue
            if (module, kind) in allowed:
                used.add((module, kind))
            else:
                found.append((module, node.lineno, kind))
    return [f"{module}:{line} {kind}" for module, line, kind in sorted(found)], used


def test_every_file_rehearsal_reads_back_is_written_through_one_module() -> None:
    found, used = unlisted_writers(Path(rehearsal.__file__).parent, ALLOWED)
    assert found == []
    assert sorted(set(ALLOWED) - used) == []  # an entry nothing needs any more goes


PLANTED = """
import io, json, os
from pathlib import Path
import torch
from rehearsal._files import atomic_writer

def save(state, path: Path) -> None:
    path.write_text(json.dumps(state))
    torch.save(state, path.with_suffix(".pt"))
    with open(path, "w") as fh:
        json.dump(state, fh)
    os.replace(path, path.with_name("x"))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)

def fine(state, path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with atomic_writer(path) as f:
        torch.save(state, f)
    with open(path, "rb") as fh, path.open() as again:
        json.load(fh)
    os.open(path, os.O_RDONLY)
"""


def test_a_planted_writer_is_reported(tmp_path: Path) -> None:
    (tmp_path / "rehearsal").mkdir()
    (tmp_path / "rehearsal" / "state.py").write_text(PLANTED, encoding="utf-8")
    (tmp_path / "rehearsal" / "_files.py").write_text('open("x", "w")\n', encoding="utf-8")
    found, _ = unlisted_writers(tmp_path / "rehearsal", {})
    assert found == [
        "state.py:8 write_text",
        "state.py:9 torch.save",
        "state.py:10 open",
        "state.py:11 json.dump",
        "state.py:12 os.replace",
        "state.py:13 os.open",
    ]


def test_an_allowed_writer_is_not_reported(tmp_path: Path) -> None:
    (tmp_path / "rehearsal").mkdir()
    (tmp_path / "rehearsal" / "report.py").write_text(
        'from pathlib import Path\nPath("r.md").write_text("x")\n'
    )
    found, used = unlisted_writers(tmp_path / "rehearsal", {("report.py", "write_text"): "for people"})
    assert (found, used) == ([], {("report.py", "write_text")})
