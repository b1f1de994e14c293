"""``rehearsal report DIR``: one static HTML page watching a deployment over time.

Figures (PNG ``data:`` URIs, so the page is a single file that opens anywhere): accuracy on every task
across versions (forgetting made visible), safety-tagged accuracy, latency p50/p95, and the memory's size
across versions and composition now (by task, label and tag). Below them: the versions' table, the
staged candidate with its shadow or canary report, and the audit trail (verified before it is shown) in
readable form. A small script marks each figure ``data-rendered="yes"`` once the browser has decoded it,
so a headless browser's DOM says whether every figure drew.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import os
from pathlib import Path
from typing import Any

from rehearsal.crypto.keys import KeyRing
from rehearsal.deployment.folder import Deployment, VersionState
from rehearsal.deployment.report_plots import bars_png, lines_png
from rehearsal.deployment.result import deployment_keys
from rehearsal.deployment.staged import StagedCandidate
from rehearsal.governance.audit_log import AuditEntry
from rehearsal.governance.versions import Version

__all__ = ["PLOTS", "write_report"]

PLOTS = ("accuracy", "safety", "latency", "memory-size", "memory-composition")
_SCRIPT = """
window.addEventListener("load", function () {
  var figures = document.querySelectorAll("img.plot");
  var drawn = 0;
  figures.forEach(function (img) {
    var ok = img.complete && img.naturalWidth > 0;
    img.setAttribute("data-rendered", ok ? "yes" : "no");
    if (ok) { drawn += 1; }
  });
  document.body.setAttribute("data-plots-rendered", String(drawn));
});
"""
_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
img.plot { display: block; margin: 1em 0; max-width: 100%; }
.fail { color: #a00; } .pass { color: #060; }
"""


def _time(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _gist(details: dict[str, Any]) -> str:
    parts = []
    for key in sorted(details):
        value = details[key]
        if value in (None, [], {}):
            continue
        if isinstance(value, list) and len(value) > 3:
            text = f"[{len(value)} items]"
        else:
            text = json.dumps(value, sort_keys=True)
            text = text if len(text) <= 80 else text[:77] + "..."
        parts.append(f"{key}={text}")
    return " ".join(parts)


def _trail(entries: list[AuditEntry]) -> str:
    rows = [[e.seq, _time(e.time), e.kind, e.actor or "-", _gist(e.details)] for e in entries]
    return _table(["seq", "time", "kind", "actor", "details"], rows)


DECISION_COLUMNS = [
    "seq",
    "update",
    "decision",
    "approved by",
    "why",
    "shadow / canary: current vs candidate",
]


def _arms(details: dict[str, Any]) -> str:
    """One shadow or canary entry in a line: each arm's requests and accuracy (safety-tagged too)."""

    def arm(name: str) -> str:
        numbers = details.get(name) or {}
        safety = numbers.get("safety")
        tagged = "" if safety is None else f", safety {safety:.3f}"
        accuracy = numbers.get("accuracy")
        shown = "-" if accuracy is None else f"{accuracy:.3f}"
        return f"{name} {shown} on {numbers.get('requests', 0)}{tagged}"

    agreement = details.get("agreement")
    agreed = "" if agreement is None else f"; agreement {agreement:.3f}"
    return f"{details.get('mode')}: {arm('current')} | {arm('candidate')}{agreed}"


def _why(decision: Any, reasons: list[str], approvers: list[str]) -> str:
    """The reasons as the decision reads them: what blocked it, or what a person accepted to pass it."""
    if not reasons:
        return "-"
    if decision == "pass" and approvers:
        return "flags accepted by the approver: " + "; ".join(reasons)
    return "; ".join(reasons)


def _decisions(entries: list[AuditEntry]) -> list[list[Any]]:
    """Each update's decision with who approved it, why, and the shadow and canary runs it had."""
    approvers: dict[Any, list[str]] = {}
    arms: dict[Any, list[str]] = {}
    for e in entries:
        if e.kind == "approve":
            approvers.setdefault(e.details.get("run_id"), []).append(str(e.details.get("approver")))
        elif e.kind == "shadow":
            arms.setdefault(e.details.get("update"), []).append(_arms(e.details))
    rows = []
    for e in entries:
        if e.kind != "train-update":
            continue
        update, decision = e.details.get("run_id"), e.details.get("decision")
        named = approvers.get(update, [])
        if e.details.get("approver") and str(e.details["approver"]) not in named:
            named = [*named, str(e.details["approver"])]
        why = _why(decision, list(e.details.get("reasons") or []), named)
        rows.append(
            [e.seq, update, decision, ", ".join(named) or "-", why, " || ".join(arms.get(update, [])) or "-"]
        )
    return rows


def _figure(name: str, uri: str, caption: str) -> str:
    return (
        f'<figure><img class="plot" id="plot-{name}" alt="{html.escape(caption)}" src="{uri}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _composition(dep: Deployment) -> tuple[dict[str, dict[str, int]], int]:
    with dep.open_memory(read_only=True) as memory:
        ids = memory.ids()
        rows = memory.entries(ids)
    groups: dict[str, dict[str, int]] = {"task": {}, "label": {}, "tag": {}}
    for row in rows.values():
        groups["task"][str(row.task)] = groups["task"].get(str(row.task), 0) + 1
        groups["label"][str(row.label)] = groups["label"].get(str(row.label), 0) + 1
        for tag in row.tags:
            groups["tag"][tag] = groups["tag"].get(tag, 0) + 1
    return {k: dict(sorted(v.items(), key=lambda kv: -kv[1])) for k, v in groups.items()}, len(ids)


def write_report(
    path: str | os.PathLike[str], *, out: str | os.PathLike[str] | None = None, keys: KeyRing | None = None
) -> Path:
    """Write the page (default ``DIR/report.html``) and return its path."""
    dep = Deployment.open(path, deployment_keys(keys))
    states = dep.states()
    _, current = dep.versions()
    groups, entries = _composition(dep)
    figures = _figures(states, groups, entries)
    version_rows = _version_rows(states, current)
    entries_log = dep.log().entries()
    staged = _staged(dep.pending())
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Deployment report</title>
<style>{_STYLE}</style></head>
<body>
<h1>Deployment {html.escape(dep.path.name)}</h1>
<p>Strategy {html.escape(dep.config.strategy)}; deployed version v{current}; {entries} memory entries.</p>
<h2>Over time</h2>
{"".join(figures)}
<h2>Versions</h2>
{_table(["version", "created", "update", "labels", "accuracy", "p50 ms", "expert"], version_rows)}
<h2>Candidate</h2>
{staged}
<h2>Update decisions</h2>
{_table(DECISION_COLUMNS, _decisions(entries_log))}
<h2>Audit trail ({len(entries_log)} entries, verified)</h2>
{_trail(entries_log)}
<script>{_SCRIPT}</script>
</body></html>
"""
    target = Path(out) if out is not None else dep.path / "report.html"
    target.write_text(page, encoding="utf-8")  # a page for people, never read back: written plainly
    return target


def _figures(
    states: list[tuple[Version, VersionState]], groups: dict[str, dict[str, int]], entries: int
) -> list[str]:
    """The page's figures: each version's numbers over time, and the memory's composition now."""
    numbers = [v.version for v, _ in states]
    tasks = sorted({t for _, s in states for t in s.metrics.get("accuracy", {})})
    accuracy = {t: [s.metrics.get("accuracy", {}).get(t) for _, s in states] for t in tasks}
    safety = {"safety-tagged": [s.metrics.get("safety", {}).get("accuracy") for _, s in states]}
    latency = {q: [s.metrics.get("latency", {}).get(f"{q}_ms") for _, s in states] for q in ("p50", "p95")}
    sizes = {"entries": [s.metrics.get("memory_entries") for _, s in states]}
    return [
        _figure(
            "accuracy",
            lines_png(numbers, accuracy, title="Accuracy per task", ylabel="accuracy", ylim=(0, 1.05)),
            "Accuracy on every task across versions",
        ),
        _figure(
            "safety",
            lines_png(numbers, safety, title="Safety-tagged accuracy", ylabel="accuracy", ylim=(0, 1.05)),
            "Accuracy on safety-tagged examples across versions",
        ),
        _figure(
            "latency",
            lines_png(numbers, latency, title="Latency per request", ylabel="ms"),
            "Inference latency p50/p95 across versions",
        ),
        _figure(
            "memory-size",
            lines_png(numbers, sizes, title="Memory size", ylabel="entries"),
            "Memory entries across versions",
        ),
        _figure(
            "memory-composition",
            bars_png(groups, title=f"Memory now: {entries} entries"),
            "The memory's composition by task, label and tag",
        ),
    ]


def _version_rows(states: list[tuple[Version, VersionState]], current: int | None) -> list[list[Any]]:
    return [
        [
            f"v{v.version}" + (" (deployed)" if v.version == current else ""),
            _time(v.created_at),
            s.update,
            len(s.labels),
            ", ".join(f"{t}={a:.3f}" for t, a in sorted(s.metrics.get("accuracy", {}).items())),
            s.metrics.get("latency", {}).get("p50_ms"),
            (s.novelty or {}).get("decision", "-"),
        ]
        for v, s in states
    ]


def _staged(pending: StagedCandidate | None) -> str:
    """The staged candidate, with its shadow's results or else the gate's preview."""
    if pending is None:
        return "<p>No candidate is staged.</p>"
    shown = json.dumps(pending.shadow or pending.gate_preview, indent=2)
    return f"<p>Staged: {html.escape(pending.update)}</p><pre>" + html.escape(shown) + "</pre>"
