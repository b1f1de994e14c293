"""``rehearsal audit show PATH``: the audit log as a person reads it — one line per entry with its ISO time
(UTC), kind, actor and the gist of its details; ``--json`` gives every detail.

The log is verified before anything is shown (:meth:`AuditLog.entries` checks chain, MACs and head), so
what is printed is what was signed.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from rehearsal.cli.common import Report
from rehearsal.governance.audit_log import AuditEntry, AuditLog

__all__ = ["entry_dict", "iso_time", "show_audit"]

_LIST_SHOWN = 3  # list details longer than this print as a count ("ids: 200 items")
_VALUE_WIDTH = 48


def iso_time(timestamp: float) -> str:
    """Seconds since the epoch as ``2026-11-30T08:00:00.123Z``."""
    moment = dt.datetime.fromtimestamp(timestamp, tz=dt.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def entry_dict(entry: AuditEntry) -> dict[str, Any]:
    return {
        "seq": entry.seq,
        "time": iso_time(entry.time),
        "timestamp": entry.time,
        "kind": entry.kind,
        "actor": entry.actor,
        "details": entry.details,
    }


def _gist(value: Any) -> str:
    if isinstance(value, list) and len(value) > _LIST_SHOWN:
        return f"[{len(value)} items]"
    if isinstance(value, dict):
        return f"{{{len(value)} fields}}"
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= _VALUE_WIDTH else text[: _VALUE_WIDTH - 3] + "..."


def _line(entry: AuditEntry) -> str:
    shown = sorted((k, v) for k, v in entry.details.items() if v not in (None, [], {}))
    details = " ".join(f"{k}={_gist(v)}" for k, v in shown)
    actor = entry.actor or "-"
    return f"{entry.seq:>5}  {iso_time(entry.time)}  {entry.kind:<12} {actor:<10} {details}".rstrip()


def show_audit(log: AuditLog, *, last: int | None) -> Report:
    entries = log.entries()
    shown = entries[-last:] if last is not None else entries
    kinds: dict[str, int] = {}
    for entry in entries:
        kinds[entry.kind] = kinds.get(entry.kind, 0) + 1
    data = {"log": str(log.path), "verified": True, "total": len(entries), "kinds": kinds}
    data["entries"] = [entry_dict(e) for e in shown]
    head = f"{len(entries)} entries in {log.path}, verified (chain, MACs and head)"
    if len(shown) < len(entries):
        head += f"; the last {len(shown)}:"
    lines = [head, f"{'seq':>5}  {'time (UTC)':<24}  {'kind':<12} {'actor':<10} details"]
    return Report(data, lines + [_line(e) for e in shown])
