"""What every benchmark records beside its figures: the commit, the machine, its load, the command, the seeds.

    from _harness import provenance, write_results
    run = provenance(seeds=[0, 1, 2])           # at the start: commit, command, cores, load
    ...
    write_results("predictors_wordnet", {"table": ...}, run)  # results/<name>.json, load at the end
    write_record(args.out, {"table": ...}, run)                # a script's own --out/--results path

Results go straight to ``benchmarks/results/`` (committed; small summaries only, never weights or stores).
A script whose RESULTS.md command names its output file writes it through ``write_record``, so the file
carries the same provenance wherever the command sends it.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["RESULTS", "provenance", "write_record", "write_results"]

RESULTS = Path(__file__).resolve().parent / "results"


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=RESULTS.parent
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
    )
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def _machine() -> dict[str, Any]:
    load = os.getloadavg()
    return {
        "cores": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "load_1m": load[0],
    }


def provenance(**extra: Any) -> dict[str, Any]:
    """The record a benchmark starts with: commit, command line, machine and load now, plus ``extra``."""
    script = Path(sys.argv[0])
    command = " ".join(["python", f"benchmarks/{script.name}", *map(shlex.quote, sys.argv[1:])])
    return {
        "commit": _commit(),
        "command": command,
        "machine": _machine(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **extra,
    }


def write_record(path: Path, payload: dict[str, Any], run: dict[str, Any]) -> Path:
    """Write ``payload`` with the provenance ``run`` (and the load at the end) to ``path``."""
    record = {**run, "load_1m_end": os.getloadavg()[0], "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**record, **payload}, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def write_results(name: str, payload: dict[str, Any], run: dict[str, Any]) -> Path:
    """Write ``payload`` with the provenance ``run`` (and the load at the end) to results/<name>.json."""
    return write_record(RESULTS / f"{name}.json", payload, run)
