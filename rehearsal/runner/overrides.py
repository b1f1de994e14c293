"""``--set key=value`` on the command line: change one setting of a run config without editing the file.

A dotted key reaches into a table (``replay.ratio=0.25``). The value is read as JSON when it parses as JSON
(``0.25``, ``true``, ``null``, ``["a", "b"]``), else taken as a string (``method=random``), so the common
cases need no quoting. A key the config does not have is an error naming it; the changed config is checked
again as a whole, exactly as a file would be.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from rehearsal.config import EWCConfig, LoRAConfig, ReplayConfig
from rehearsal.errors import ConfigError
from rehearsal.governance.gate import GateConfig
from rehearsal.methods.generative.config import GenerativeConfig
from rehearsal.runner.config import RunConfig

__all__ = ["apply_overrides", "parse_assignment"]


def _table_class(name: str) -> type[Any] | None:
    """The config class of the table ``name`` (``gate`` may be absent: setting one of its keys creates it)."""
    tables: dict[str, type[Any]] = {
        "replay": ReplayConfig,
        "ewc": EWCConfig,
        "lora": LoRAConfig,
        "gate": GateConfig,
        "generative": GenerativeConfig,
    }
    return tables.get(name)


def parse_assignment(text: str) -> tuple[list[str], Any]:
    """``"replay.ratio=0.25"`` -> ``(["replay", "ratio"], 0.25)``."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set takes KEY=VALUE (e.g. replay.ratio=0.25), got {text!r}")
    parts = key.split(".")
    if any(not p for p in parts):
        raise ConfigError(f"--set: {key!r} is not a setting name")
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw  # a bare word is a string: method=random
    return parts, value


def apply_overrides(config: RunConfig, assignments: Sequence[str]) -> RunConfig:
    """``config`` with each ``KEY=VALUE`` of ``assignments`` applied in order, checked again as a whole."""
    if not assignments:
        return config
    data = config.to_dict()
    top = {f.name for f in dataclasses.fields(RunConfig)}
    for text in assignments:
        parts, value = parse_assignment(text)
        key = ".".join(parts)
        if parts[0] not in top:
            raise ConfigError(f"--set: unknown setting {key!r}; known: {sorted(top)}")
        if len(parts) == 1:
            data[parts[0]] = value
            continue
        table = _table_class(parts[0])
        if table is None or len(parts) != 2:
            raise ConfigError(f"--set: unknown setting {key!r} ({parts[0]!r} is not a table)")
        known = {f.name for f in dataclasses.fields(table)}
        if parts[1] not in known:
            raise ConfigError(f"--set: unknown setting {key!r}; {parts[0]!r} has {sorted(known)}")
        section = data.get(parts[0])
        section = dict(section) if isinstance(section, dict) else {}
        section[parts[1]] = value
        data[parts[0]] = section
    return RunConfig.from_dict(data)
