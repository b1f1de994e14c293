"""The one way benchmark scripts report: a two-column table on stdout and the same figures as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def print_and_save(result: dict[str, Any], out: Path) -> None:
    width = max(len(k) for k in result)
    print(f"{'metric':<{width}}  value")
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
