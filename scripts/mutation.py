"""Mutation testing of the modules that carry rehearsal's promises (not part of CI: it is slow).

    python scripts/mutation.py                 # every group below, one after the other
    python scripts/mutation.py filters replay  # only these groups
    python scripts/mutation.py --report        # print the figures of runs already made
    python scripts/mutation.py --survivors replay  # rerun a group's survivors, timeouts and untested
                                                   # mutants against today's tests

Each group is mutated by mutmut in its own scratch copy of the repository (``.mutation/<group>``, ignored by
git), against only the fast tests that guard it, so a group's results stand on their own and a run cut short
keeps the groups it finished. The script prints, per group, the mutants, killed, survived, and every
surviving mutant's name (``.venv/bin/mutmut show NAME`` inside ``.mutation/<group>`` prints its diff), and
writes the figures to ``benchmarks/out/mutation.json``.

When modules move, update the paths in GROUPS (the one place they are named).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

# group -> (modules to mutate, fast tests that guard them)
GROUPS: dict[str, tuple[list[str], list[str]]] = {
    "filters": (
        ["rehearsal/store/where.py", "rehearsal/store/sqlite/where.py"],
        ["tests/test_filters.py", "tests/test_properties.py", "tests/test_survivors.py"],
    ),
    "replay": (
        [
            "rehearsal/replay/selector.py",
            "rehearsal/replay/modes/base.py",
            "rehearsal/replay/modes/random.py",
            "rehearsal/replay/modes/retrieval.py",
            "rehearsal/replay/modes/hybrid.py",
        ],
        [
            "tests/test_replay.py",
            "tests/test_replay_selection_pinned.py",
            "tests/test_selection_modes.py",
            "tests/test_promises.py",
            "tests/test_properties.py",
            "tests/test_survivors.py",
        ],
    ),
    "metrics": (
        ["rehearsal/runner/metrics.py"],
        ["tests/test_metrics.py", "tests/test_properties.py", "tests/test_survivors.py"],
    ),
    "admission": (
        ["rehearsal/memory/policies.py"],
        ["tests/test_policies.py", "tests/test_survivors.py"],
    ),
    "audit": (
        ["rehearsal/governance/audit_log.py"],
        [
            "tests/test_audit.py",
            "tests/test_audit_verify_key.py",
            "tests/test_forget_receipts.py",
            "tests/test_rotation_full_disk.py",
            "tests/test_promises.py",
            "tests/test_survivors.py",
            "tests/test_survivors_audit.py",
        ],
    ),
    "sealing": (
        ["rehearsal/crypto/keys.py", "rehearsal/store/sqlite/texts.py", "rehearsal/store/sqlite/vault_db.py"],
        [
            "tests/test_crypto.py",
            "tests/test_vault.py",
            "tests/test_properties.py",
            "tests/test_survivors.py",
            "tests/test_survivors_sealing.py",
        ],
    ),
}

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".mutation"
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped",
          36: "timeout", 24: "timeout", -24: "timeout", 152: "timeout", 255: "timeout",
          37: "caught by type check", None: "not checked"}  # fmt: skip


def _prepare(group: str) -> Path:
    """A fresh copy of the repository's files (tracked, or new and not ignored), set up for ``group``."""
    folder = WORK / group
    if folder.exists():
        shutil.rmtree(folder)
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        source = ROOT / name
        if source.is_file():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, folder / name)
    _write_settings(folder, group)
    return folder


def _write_settings(folder: Path, group: str) -> None:
    """The repository's pyproject.toml with mutmut's settings for ``group`` (in the copy and its mutants/)."""
    modules, tests = GROUPS[group]
    settings = {
        "source_paths": ["rehearsal"],
        "only_mutate": modules,
        "pytest_add_cli_args_test_selection": [t for t in tests if (ROOT / t).exists()],
        # Fast tests only; Hypothesis skips shrinking (a mutant is killed by any failing example).
        "pytest_add_cli_args": [
            "-q",
            "-p",
            "no:cacheprovider",
            "-x",
            "-m",
            "not slow",
            "--hypothesis-profile=mutation",
        ],
    }
    lines = ["", "[tool.mutmut]"] + [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8") + "\n".join(lines) + "\n"
    for target in (folder, folder / "mutants"):
        if target.is_dir():
            (target / "pyproject.toml").write_text(text, encoding="utf-8")


def _figures(group: str) -> dict[str, object]:
    folder = WORK / group / "mutants"
    counts: Counter[str] = Counter()
    survivors: list[str] = []
    by_module: dict[str, Counter[str]] = {}
    for module in GROUPS[group][0]:
        meta = folder / (module + ".meta")
        if not meta.exists():
            continue
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        module_counts = by_module.setdefault(module, Counter())
        for name, code in codes.items():
            status = STATUS.get(code, "suspicious")
            counts[status] += 1
            module_counts[status] += 1
            if status == "survived":
                survivors.append(name)
    tested = counts["killed"] + counts["survived"] + counts["timeout"]
    return {
        "mutants": sum(counts.values()),
        "status": dict(counts),
        "by_module": {m: dict(c) for m, c in by_module.items()},
        "killed_share": round((counts["killed"] + counts["timeout"]) / tested, 3) if tested else None,
        "survivors": sorted(survivors),
    }


def _env() -> dict[str, str]:
    """The environment of a mutmut run: offline, and one OpenMP thread. mutmut forks every mutant's worker
    from a process that has run the tests once, and FAISS and torch leave an OpenMP thread pool behind in it;
    a forked child that then searches waits forever on that pool's lock (no CPU burnt, so mutmut's CPU-time
    limit never fires), which looked like a timeout while the mutant in fact survived."""
    threads = {name: "1" for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    return dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", **threads)


def _run(group: str, children: int) -> None:
    folder = _prepare(group)
    env = _env()
    mutmut = Path(sys.executable).with_name("mutmut")
    print(f"== {group}: mutating {GROUPS[group][0]} against {GROUPS[group][1]}", flush=True)
    subprocess.run([str(mutmut), "run", "--max-children", str(children)], cwd=folder, env=env, check=False)


def _rerun_survivors(group: str, children: int) -> None:
    """Test a group's surviving, timed-out and untested mutants again, against the current tests (after new
    ones were written); every other verdict of the earlier run is kept."""
    folder = WORK / group
    earlier = _verdicts(group)
    survivors = sorted(
        n for n, code in earlier.items() if STATUS.get(code) in ("survived", "timeout", "no tests")
    )
    if not survivors:
        return
    _write_settings(folder, group)  # today's list of tests
    for test in GROUPS[group][1]:
        for target in (folder / test, folder / "mutants" / test):
            if (ROOT / test).exists():
                shutil.copy2(ROOT / test, target)
    for support in (ROOT / "tests").glob("*.py"):  # helpers and conftest the tests import
        if not support.name.startswith("test_"):
            shutil.copy2(support, folder / "mutants" / "tests" / support.name)
    env = _env()
    mutmut = Path(sys.executable).with_name("mutmut")
    print(f"== {group}: {len(survivors)} survivors again", flush=True)
    subprocess.run(
        [str(mutmut), "run", "--max-children", str(children), *survivors], cwd=folder, env=env, check=False
    )
    # mutmut forgets every verdict when the list of tests changes; a mutant the old tests killed stays killed
    # when tests are only added, so the earlier verdicts come back under the new ones.
    for module in GROUPS[group][0]:
        meta = folder / "mutants" / (module + ".meta")
        if meta.exists():
            data = json.loads(meta.read_text())
            fresh = {n: c for n, c in data["exit_code_by_key"].items() if c is not None}
            data["exit_code_by_key"] = {n: fresh.get(n, earlier.get(n)) for n in data["exit_code_by_key"]}
            meta.write_text(json.dumps(data))


def _verdicts(group: str) -> dict[str, int | None]:
    """Every mutant of ``group`` -> mutmut's exit code for it (None: not checked)."""
    out: dict[str, int | None] = {}
    for module in GROUPS[group][0]:
        meta = WORK / group / "mutants" / (module + ".meta")
        if meta.exists():
            out.update(json.loads(meta.read_text())["exit_code_by_key"])
    return out


def _report(groups: list[str]) -> dict[str, dict[str, object]]:
    results = {g: _figures(g) for g in groups if (WORK / g / "mutants").exists()}
    print(
        f"{'group':<10} {'mutants':>8} {'killed':>7} {'survived':>9} {'timeout':>8} {'no tests':>9}"
        f" {'score':>6}"
    )
    for group, fig in results.items():
        status = fig["status"]
        assert isinstance(status, dict)
        print(
            f"{group:<10} {fig['mutants']:>8} {status.get('killed', 0):>7} {status.get('survived', 0):>9} "
            f"{status.get('timeout', 0):>8} {status.get('no tests', 0):>9} {fig['killed_share']!s:>6}"
        )
    for group, fig in results.items():
        survivors = fig["survivors"]
        assert isinstance(survivors, list)
        if survivors:
            print(f"\nsurvivors in {group}:")
            for name in survivors:
                print(f"  {name}")
    out = ROOT / "benchmarks" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "mutation.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("groups", nargs="*", help=f"groups to run (default: all of {list(GROUPS)})")
    parser.add_argument("--report", action="store_true", help="only print the figures of earlier runs")
    parser.add_argument(
        "--survivors",
        action="store_true",
        help="rerun the survivors, timeouts and untested mutants of earlier runs",
    )
    parser.add_argument("--children", type=int, default=2, help="parallel mutant workers (default 2)")
    args = parser.parse_args()
    groups = args.groups or list(GROUPS)
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown:
        parser.error(f"unknown groups {unknown}; known: {list(GROUPS)}")
    if args.survivors:
        for group in groups:
            _rerun_survivors(group, args.children)
    elif not args.report:
        for group in groups:
            _run(group, args.children)
    _report(groups)


if __name__ == "__main__":
    main()
