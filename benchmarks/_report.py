"""The two-column report of the simpler benchmark scripts: a table on stdout and the same figures as JSON,
with the provenance every result carries (``_harness.provenance``: commit, command, machine and load)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from _harness import provenance


def print_and_save(result: dict[str, Any], out: Path) -> None:
    width = max(len(k) for k in result)
    print(f"{'metric':<{width}}  value")
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    out.parent.mkdir(parents=True, exist_ok=True)
    # The load at the end stands in for the run's (these scripts take no provenance at their start).
    record = {**provenance(), "load_1m_end": os.getloadavg()[0]}
    record["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    out.write_text(json.dumps({**record, **result}, indent=2) + "\n")
