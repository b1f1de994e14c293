"""The two-column report of the simpler benchmark scripts: a table on stdout and the same figures as JSON,
with the provenance every result carries (``_harness.provenance``: commit, command, machine and load)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from _harness import provenance, write_record


def print_and_save(result: dict[str, Any], out: Path) -> None:
    width = max(len(k) for k in result)
    print(f"{'metric':<{width}}  value")
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    # Provenance taken at the end stands in for the run's (these scripts take none at their start), so it
    # claims no start time.
    run = {key: value for key, value in provenance().items() if key != "started"}
    write_record(out, result, run)
