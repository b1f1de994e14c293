"""Staging a candidate on logged requests: shadow (both versions answer every request) or canary (a
stable share of requests goes to the candidate, the rest to the deployed version).

The report holds, per arm: accuracy on the labelled requests, per task the arm knows (the candidate's
new tasks too) and per slice (a request's tags), the safety-tagged requests' accuracy, and latency
p50/p95 of one request at a time; shadow adds the agreement of the two. A canary arm is chosen by the
SHA-256 of the request's text, so the same request always goes to the same arm, whatever the order or
the batch. The summary is logged (a ``shadow`` entry: numbers only) and kept with the staged candidate
for the report page, and each arm's right/wrong per labelled request for ``rehearsal promote``, whose
gate judges them with the staging rule (a shadow paired request by request, a canary's arms apart).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rehearsal.crypto.keys import KeyRing
from rehearsal.deployment.evaluate import latency_summary
from rehearsal.deployment.examples import read_examples
from rehearsal.deployment.folder import Deployment
from rehearsal.deployment.model import DeployedModel
from rehearsal.deployment.result import deployment_keys
from rehearsal.errors import ConfigError, ValidationError
from rehearsal.examples import Example
from rehearsal.governance.audit_log import safe_token
from rehearsal.memory.facade import RehearsalMemory

__all__ = ["canary_arm", "shadow"]

_BUCKETS = 10_000


def canary_arm(text: str, fraction: float) -> bool:
    """Whether a request goes to the candidate: a stable hash of its text falls in the first
    ``fraction`` of the buckets."""
    bucket = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") % _BUCKETS
    return bucket < round(fraction * _BUCKETS)


def _accuracy(rows: Sequence[tuple[Example, str]]) -> float | None:
    labelled = [(ex, answer) for ex, answer in rows if ex.label is not None]
    return round(float(np.mean([a == ex.label for ex, a in labelled])), 6) if labelled else None


def _arm(
    model: DeployedModel, requests: Sequence[Example], memory: RehearsalMemory, safety: Sequence[str]
) -> tuple[dict[str, Any], list[tuple[Example, str]]]:
    answers, latencies = model.timed_predict([r.text for r in requests], memory)
    rows = list(zip(requests, answers, strict=True))
    return _summary(model, rows, latencies, safety), rows


def _summary(
    model: DeployedModel, rows: list[tuple[Example, str]], latencies: list[float], safety: Sequence[str]
) -> dict[str, Any]:
    requests = [r for r, _ in rows]
    old = set(model.state.tasks)
    tasks = sorted({r.task for r in requests})
    slices = sorted({tag for r in requests for tag in r.tags})
    return {
        "requests": len(requests),
        "labelled": sum(r.label is not None for r in requests),
        "accuracy": _accuracy(rows),
        "per_task": {t: _accuracy([x for x in rows if x[0].task == t]) for t in tasks if t in old},
        "per_slice": {s: _accuracy([x for x in rows if s in x[0].tags]) for s in slices},
        "safety": _accuracy([x for x in rows if set(x[0].tags) & set(safety)]),
        "latency": latency_summary(latencies),
    }


def shadow(
    path: str | os.PathLike[str],
    requests: str | os.PathLike[str],
    *,
    keys: KeyRing | None = None,
    canary: float | None = None,
) -> dict[str, Any]:
    """Compare the staged candidate with the deployed version on ``requests`` (a JSON-lines file of
    inputs, labels optional). ``canary``: the share routed to the candidate (None: shadow)."""
    if canary is not None and (isinstance(canary, bool) or not 0.0 < float(canary) < 1.0):
        raise ConfigError(f"'canary' must be a share in (0, 1), got {canary!r}")
    dep = Deployment.open(path, deployment_keys(keys))
    pending = dep.pending()
    if pending is None:
        raise ValidationError(
            f"deployment {str(dep.path)!r} has no staged candidate (make one with 'rehearsal update --stage')"
        )
    items = read_examples(requests, labelled=False)
    version, state = dep.current()
    cand_weights = dep.candidate_weights(pending)
    current = DeployedModel.load(dep.config, state, Path(version.weights))
    candidate = DeployedModel.load(dep.config, dep.load_state(cand_weights), cand_weights)
    safety = dep.config.safety_tags
    with dep.open_memory(read_only=True) as memory:
        if canary is None:
            now, now_rows = _arm(current, items, memory, safety)
            new, new_rows = _arm(candidate, items, memory, safety)
            agree = float(np.mean([a == b for (_, a), (_, b) in zip(now_rows, new_rows, strict=True)]))
            report = {"mode": "shadow", "current": now, "candidate": new, "agreement": round(agree, 6)}
        else:
            to_candidate = [canary_arm(r.text, float(canary)) for r in items]
            mine = [r for r, c in zip(items, to_candidate, strict=True) if c]
            rest = [r for r, c in zip(items, to_candidate, strict=True) if not c]
            now, now_rows = _arm(current, rest, memory, safety)
            new, new_rows = _arm(candidate, mine, memory, safety)
            report = {"mode": "canary", "fraction": float(canary), "current": now, "candidate": new}
            report["agreement"] = None
        answers = {"current": now_rows, "candidate": new_rows}
    report.update(update=pending.update, current_version=version.version)
    _log(dep, report)
    # Kept for promote, whose gate judges these results (rehearsal.governance.updates.live_check).
    evidence = {"mode": report["mode"], "correct": _correct(answers, safety)}
    dep.set_pending(dataclasses.replace(pending, shadow=report, live=evidence))
    return report


def _correct(
    answers: dict[str, list[tuple[Example, str]]], safety: Sequence[str]
) -> dict[str, dict[str, list[int]]]:
    """Per arm, 1/0 for each labelled request (in order) and for the safety-tagged ones among them."""

    def marks(arm: str, keep: Any) -> list[int]:
        return [int(answer == ex.label) for ex, answer in answers[arm] if ex.label is not None and keep(ex)]

    tagged = set(safety)
    return {
        part: {arm: marks(arm, keep) for arm in ("current", "candidate")}
        for part, keep in (("all", lambda ex: True), ("safety", lambda ex: bool(set(ex.tags) & tagged)))
    }


def _log(dep: Deployment, report: dict[str, Any]) -> None:
    def numbers(arm: dict[str, Any]) -> dict[str, Any]:
        tasks = {safe_token(t): v for t, v in arm["per_task"].items()}
        return {
            "requests": arm["requests"],
            "accuracy": arm["accuracy"],
            "safety": arm["safety"],
            "per_task": tasks,
            **arm["latency"],
        }

    details = {
        "update": report["update"],
        "mode": report["mode"],
        "agreement": report["agreement"],
        "current": numbers(report["current"]),
        "candidate": numbers(report["candidate"]),
    }
    dep.log().append("shadow", details, actor="deployment")
