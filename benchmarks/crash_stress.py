"""Crash stress: SIGKILL a writing process at random moments, reopen, verify, check every acknowledged add.

Runs the loop of ``tests/test_memory_crash.py`` (same child, same checks) many more times on one growing
memory, so later kills hit a bigger store (snapshot writes, index rebuilds, longer delta replays).

    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 .venv/bin/python benchmarks/crash_stress.py --kills 200
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from _report import print_and_save  # benchmarks/ is on sys.path when run as a script

from rehearsal.crypto.keys import KeyRing
from rehearsal.memory.facade import RehearsalMemory

HERE = Path(__file__).resolve().parent


def load_harness() -> Any:
    source = HERE.parent / "tests" / "test_memory_crash.py"
    spec = importlib.util.spec_from_file_location("crash_harness", source)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load the crash harness from {source}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--max-delay", type=float, default=0.8, help="seconds after 'ready' to kill, at most")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=HERE / "out" / "crash_stress.json")
    args = parser.parse_args()

    harness = load_harness()
    keys = KeyRing.generate()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path, log = Path(tmp) / "mem", Path(tmp) / "acks.log"
        dim = harness.DIM
        RehearsalMemory.create(path, keys=keys, dim=dim, encoder_name=f"synthetic-{dim}").close()
        sizes = harness.crash_loop(
            path, keys, log, kills=args.kills, seed=args.seed, max_delay=args.max_delay
        )
        added, maybe, deleted = harness.read_log(log)
        with RehearsalMemory.open(path, keys=keys) as mem:
            report = mem.verify()
            spec = mem.stats()["index_spec"]
            missing = sorted(set(added) - deleted - maybe - set(mem.ids()))
    elapsed = time.perf_counter() - started
    result = {
        "kills": args.kills,
        "max_delay_s": args.max_delay,
        "acknowledged_adds": len(added),
        "acknowledged_deletes": len(deleted),
        "lost_acknowledged": len(missing),
        "final_entries": report["entries"],
        "final_generation": report["generation"],
        "final_index_spec": spec,
        "size_after_kill_10": sizes[min(9, len(sizes) - 1)],
        "seconds": round(elapsed, 1),
    }
    print_and_save(result, args.out)
    if missing:
        raise SystemExit(f"lost acknowledged ids: {missing[:10]}")


if __name__ == "__main__":
    main()
