"""A run's wall time beside other CPU-bound jobs, with its thread pools sized to the free cores (the
default, ``rehearsal.threads``) and with every pool on every core (what the libraries do on their own).

Each condition runs the same ``rehearsal run`` (the default config cut to three WordNet tasks and 16
examples per class, seed 0) as a fresh process; "busy" conditions first start ``--hogs`` processes that
spin on one core each until the run ends. The figures are ratios of wall time against the solo run
measured in the same invocation:

    .venv/bin/python benchmarks/contention.py   # solo; 2 hogs + free-core threads; 2 hogs + all cores

Prints a table and writes ``benchmarks/results/contention.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _harness import provenance, write_results

ROOT = Path(__file__).resolve().parent.parent
SMALL = [
    'tasks=["living", "physical", "abstract"]',
    "max_train_per_class=16",
    "max_test_per_class=8",
    "epochs=1.0",
    "prediction=head",
    "progress=false",
]
CLI = str(Path(sys.executable).with_name("rehearsal"))  # the console script beside this interpreter
HOG = "import time\nend = time.time() + 3600\nwhile time.time() < end:\n    pass\n"


def run_once(
    config: Path, folder: Path, key: Path, overrides: list[str], threads: int | None
) -> dict[str, Any]:
    command = [CLI, "run", str(config), "--output-dir", str(folder)]
    command += ["--key-file", str(key), "--json"]
    for item in overrides:
        command += ["--set", item]
    if threads is not None:
        command += ["--threads", str(threads)]
    env = {k: v for k, v in os.environ.items() if k not in {"OMP_NUM_THREADS", "MKL_NUM_THREADS"}}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.pop("REHEARSAL_THREADS", None)
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"the run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    report = json.loads(done.stdout)
    return {"wall_seconds": wall, "acc": report.get("summary", {}).get("average_accuracy"), "report": report}


def with_hogs(count: int, body: Any) -> Any:
    hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(count)]
    try:
        time.sleep(2.0)  # let the kernel's runnable count see them
        return body()
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "default.toml")
    parser.add_argument("--hogs", type=int, default=2, help="CPU-bound processes beside the busy runs")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--name", default="contention", help="results/<name>.json")
    args = parser.parse_args()
    overrides = [*SMALL, *args.overrides]
    record = provenance(hogs=args.hogs, overrides=overrides)
    cores = os.cpu_count() or 1
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        key = Path(tmp) / "key"
        subprocess.run([CLI, "keygen", "--out", str(key)], check=True, cwd=ROOT)
        conditions = [
            ("solo, free-core threads", 0, None),
            (f"{args.hogs} hogs, free-core threads", args.hogs, None),
            (f"{args.hogs} hogs, every pool on all {cores} cores", args.hogs, cores),
        ]
        for i, (name, hogs, threads) in enumerate(conditions):
            folder = Path(tmp) / f"run{i}"

            def body(folder: Path = folder, threads: int | None = threads) -> dict[str, Any]:
                return run_once(args.config, folder, key, overrides, threads)

            load = os.getloadavg()[0]
            result = with_hogs(hogs, body) if hogs else body()
            result.pop("report")
            rows[name] = {**result, "hogs": hogs, "threads": threads or "free cores", "load_1m_before": load}
            print(f"{name:>40}: {result['wall_seconds']:7.1f} s  ACC {result['acc']}", flush=True)
    solo = rows[conditions[0][0]]["wall_seconds"]
    for row in rows.values():
        row["ratio_to_solo"] = row["wall_seconds"] / solo
    print("\n| condition | wall s | ÷ solo | ACC |\n|---|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['wall_seconds']:.1f} | {row['ratio_to_solo']:.2f} | {row['acc']} |")
    path = write_results(args.name, {"conditions": rows}, record)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
