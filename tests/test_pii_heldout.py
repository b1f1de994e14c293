"""PII floors on the sets the scanner was not tuned on: the held-out rows of pii_labelled.jsonl (written
after the scanner was frozen) and pii_heldout_blind.jsonl (written without sight of the scanner).

Measured when these floors were set (benchmarks/pii.py): held-out 14/16 labels found, 1 false positive
(precision 0.933, recall 0.875), 0/13 look-alikes flagged; blind 149/149 found, no false positive,
0/101 look-alikes flagged. The floors sit a little under those figures.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rehearsal.governance.pii import PII_KINDS, scan, score

DATA = Path(__file__).parent / "data"

Rows = list[tuple[str, list[tuple[str, int, int]]]]


def _rows(name: str, *, held_out: bool) -> Rows:
    rows = []
    for line in (DATA / name).read_text(encoding="utf-8").splitlines():
        item = json.loads(line)
        if bool(item.get("held_out")) != held_out:
            continue
        text = item["text"]
        spans = [
            (p["kind"], text.index(p["value"]), text.index(p["value"]) + len(p["value"])) for p in item["pii"]
        ]
        rows.append((text, spans))
    return rows


def _totals(rows: Rows) -> tuple[float, float]:
    per_kind = score(rows)
    tp = sum(c["tp"] for c in per_kind.values())
    fp = sum(c["fp"] for c in per_kind.values())
    fn = sum(c["fn"] for c in per_kind.values())
    return tp / (tp + fp), tp / (tp + fn)


HELD_OUT = _rows("pii_labelled.jsonl", held_out=True)
BLIND = _rows("pii_heldout_blind.jsonl", held_out=True)


def test_the_sets_are_the_ones_measured() -> None:
    assert (len(HELD_OUT), sum(len(s) for _, s in HELD_OUT)) == (28, 16)
    assert (len(BLIND), sum(len(s) for _, s in BLIND)) == (212, 149)
    assert {kind for _, spans in BLIND for kind, _, _ in spans} == set(PII_KINDS)


def test_held_out_set_floors() -> None:
    precision, recall = _totals(HELD_OUT)
    assert precision >= 0.9
    assert recall >= 0.85


def test_blind_set_floors_overall_and_per_kind() -> None:
    precision, recall = _totals(BLIND)
    assert precision >= 0.98
    assert recall >= 0.98
    per_kind = score(BLIND)
    low = {k: (round(v["precision"], 3), round(v["recall"], 3)) for k, v in per_kind.items()
           if v["precision"] < 0.95 or v["recall"] < 0.9}  # fmt: skip
    assert not low


@pytest.mark.parametrize(("rows", "allowed"), [(HELD_OUT, 0), (BLIND, 2)], ids=["held-out", "blind"])
def test_look_alikes_in_unseen_sets_are_not_flagged(rows: Rows, allowed: int) -> None:
    flagged = [text for text, spans in rows if not spans and scan(text)]
    assert len(flagged) <= allowed, flagged
