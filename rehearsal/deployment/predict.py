"""``rehearsal predict``: the deployed version answers a file of requests, one at a time as a server would.

Each answer is written with the request's row number (``id``), the ``label``, the answering predictor's
``score`` and the request's latency; the summary gives the version, the predictor and p50/p95 latency.
A memory predictor is fitted (and the model warmed up) before the first timed request, and that fitting
time is reported on its own, so latencies are what a long-running server would see.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path
from typing import Any

from rehearsal._files import atomic_write
from rehearsal.crypto.keys import KeyRing
from rehearsal.deployment.evaluate import latency_summary
from rehearsal.deployment.examples import read_examples
from rehearsal.deployment.folder import Deployment
from rehearsal.deployment.model import DeployedModel
from rehearsal.deployment.result import deployment_keys
from rehearsal.errors import ValidationError

__all__ = ["predict_requests"]

_FIELDS = ("id", "label", "score", "latency_ms")


def _write(out: Path, rows: list[dict[str, Any]]) -> None:
    """JSON lines, or CSV when ``out`` ends in ``.csv``; replaced atomically."""
    if out.suffix.lower() == ".csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        text = buffer.getvalue()
    else:
        text = "".join(json.dumps(row) + "\n" for row in rows)
    atomic_write(out, text.encode("utf-8"))


def predict_requests(
    path: str | os.PathLike[str],
    data: str | os.PathLike[str],
    *,
    keys: KeyRing | None = None,
    out: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Answer every request in ``data`` (JSON lines or CSV with a ``text`` column) with the deployed
    version of the deployment at ``path``; write the answers to ``out`` when given."""
    target = None if out is None else Path(out)
    if target is not None and not target.parent.is_dir():
        raise ValidationError(f"cannot write {str(target)!r}: no folder {str(target.parent)!r}")
    dep = Deployment.open(path, deployment_keys(keys))
    requests = read_examples(data, labelled=False)
    version, state = dep.current()
    model = DeployedModel.load(dep.config, state, Path(version.weights))
    rows: list[dict[str, Any]] = []
    with dep.open_memory(read_only=True) as memory:
        started = time.perf_counter()
        model.predict([requests[0].text], memory)  # fits the predictor and warms the model up
        warmup = time.perf_counter() - started
        for number, request in enumerate(requests):
            started = time.perf_counter()
            labels, scores = model.predict_scored([request.text], memory)
            latency = (time.perf_counter() - started) * 1000.0
            rows.append(
                {
                    "id": number,
                    "label": labels[0],
                    "score": round(scores[0], 6),
                    "latency_ms": round(latency, 3),
                }
            )
    if target is not None:
        _write(target, rows)
    return {
        "version": version.version,
        "prediction": dep.config.prediction,
        "requests": len(rows),
        "latency": latency_summary([row["latency_ms"] for row in rows]),
        "warmup_seconds": round(warmup, 3),
        "out": None if target is None else str(target),
        "answers": rows if target is None else None,
    }
