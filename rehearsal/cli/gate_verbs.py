"""``rehearsal gate``: run the validation gate on a candidate update from files, from the command line.

Accuracies come from a JSON mapping ``{task: accuracy}`` or from a ``results.json`` written by
``rehearsal run`` (the last completed row of its accuracy matrix). Replay texts and model outputs are text
files, one item per line. The exit status is 0 for "pass", 3 for "needs-approval" and 4 for "fail", so a
pipeline can branch on it; ``--log`` records the decision in an audit log (keyed by the master key).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from rehearsal.cli.common import EXIT_FAIL, EXIT_NEEDS_APPROVAL, Report, required_keys
from rehearsal.errors import ValidationError
from rehearsal.governance.audit_log import AuditLog
from rehearsal.governance.gate import FAIL, NEEDS_APPROVAL, GateConfig, evaluate_gate

__all__ = ["EXIT_FAIL", "EXIT_NEEDS_APPROVAL", "gate_args", "run_gate"]


def gate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--baseline", required=True, help="current model's accuracies (JSON) or its results.json")
    p.add_argument("--candidate", required=True, help="candidate's accuracies (JSON) or its results.json")
    p.add_argument("--replay-texts", help="file of the replay texts selected for training, one per line")
    p.add_argument("--outputs", help="file of the candidate's outputs on the prompt set, one per line")
    p.add_argument("--max-drop", type=float, default=0.02, help="allowed fall of a past task's accuracy")
    p.add_argument("--run-id", default="candidate", help="the update's id in the audit log")
    p.add_argument("--log", help="audit log to record the decision in (needs the master key)")
    p.add_argument("--key-file", help="file with the base64 master key (for --log)")


def load_accuracies(path: str) -> dict[str, float]:
    """``{task: accuracy}`` from a plain mapping or from a run's results.json."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValidationError(f"cannot read accuracies from {path!r}: {exc}") from exc
    if isinstance(data, dict) and "accuracy" in data and isinstance(data["accuracy"], dict):
        return _last_row(data["accuracy"], path)
    if isinstance(data, dict):
        return data
    raise ValidationError(f"{path!r} holds neither a task -> accuracy mapping nor a run's results.json")


def _last_row(matrix: dict[str, Any], path: str) -> dict[str, float]:
    names, rows = matrix.get("task_names"), matrix.get("matrix")
    if not isinstance(names, list) or not isinstance(rows, list):
        raise ValidationError(f"{path!r}: accuracy matrix lacks 'task_names' or 'matrix'")
    for row in reversed(rows):
        measured = {n: v for n, v in zip(names, row, strict=False) if v is not None and not math.isnan(v)}
        if measured:
            return measured
    raise ValidationError(f"{path!r}: the accuracy matrix has no measured row")


def _lines(path: str | None) -> list[str]:
    if path is None:
        return []
    try:
        return [line for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError as exc:
        raise ValidationError(f"cannot read {path!r}: {exc.strerror}") from exc


def run_gate(args: argparse.Namespace) -> Report:
    report = evaluate_gate(
        load_accuracies(args.baseline),
        load_accuracies(args.candidate),
        _lines(args.replay_texts),
        _lines(args.outputs),
        GateConfig(max_drop=args.max_drop),
    )
    if args.log is not None:
        log = AuditLog.open(args.log, required_keys(args))
        details = {"run_id": args.run_id, "gate": report.decision, "flags": len(report.risk_flags)}
        log.append("train-update", details)
    status = {FAIL: EXIT_FAIL, NEEDS_APPROVAL: EXIT_NEEDS_APPROVAL}.get(report.decision, 0)
    lines = [f"gate: {report.decision}", *(f"  {reason}" for reason in report.reasons)]
    return Report(report.to_dict(), lines, status=status)
