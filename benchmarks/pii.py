"""PII scanner precision/recall per kind on the labelled sets in tests/data/.

Three sets: the development set the scanner was tuned on and a small held-out set written after it was
frozen (both in pii_labelled.jsonl), and a larger blind set (pii_heldout_blind.jsonl) written by a
session that never saw the scanner's code or its other data.

python benchmarks/pii.py            # prints a table, writes benchmarks/out/pii.json
"""

from __future__ import annotations

import json
from pathlib import Path

from rehearsal.governance.pii import PII_KINDS, scan, score

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "pii_labelled.jsonl"
BLIND = ROOT / "tests" / "data" / "pii_heldout_blind.jsonl"
OUT = ROOT / "benchmarks" / "out" / "pii.json"


def load(path: Path = DATA, *, held_out: bool = False) -> list[tuple[str, list[tuple[str, int, int]]]]:
    """(text, [(kind, start, end)]) pairs of the development set (or of the held-out one); a label's span
    is where its value first occurs in the text."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        item = json.loads(line)
        if bool(item.get("held_out")) != held_out:
            continue
        text = item["text"]
        spans = []
        for label in item["pii"]:
            start = text.index(label["value"])
            spans.append((label["kind"], start, start + len(label["value"])))
        rows.append((text, spans))
    return rows


def table(name: str, rows: list[tuple[str, list[tuple[str, int, int]]]]) -> dict[str, object]:
    per_kind = score(rows)
    negatives = [text for text, spans in rows if not spans]
    flagged = sum(1 for text in negatives if scan(text))
    with_pii = len(rows) - len(negatives)
    print(f"\n{name}: {len(rows)} strings: {with_pii} with PII, {len(negatives)} look-alikes without")
    print(f"{'kind':<9} {'labels':>6} {'tp':>4} {'fp':>4} {'fn':>4} {'precision':>9} {'recall':>7}")
    for kind in PII_KINDS:
        c = per_kind[kind]
        labels = int(c["tp"] + c["fn"])
        print(
            f"{kind:<9} {labels:>6} {int(c['tp']):>4} {int(c['fp']):>4} {int(c['fn']):>4}"
            f" {c['precision']:>9.3f} {c['recall']:>7.3f}"
        )
    tp = sum(c["tp"] for c in per_kind.values())
    fp = sum(c["fp"] for c in per_kind.values())
    fn = sum(c["fn"] for c in per_kind.values())
    total = {"precision": tp / (tp + fp) if tp + fp else 1.0, "recall": tp / (tp + fn) if tp + fn else 1.0}
    print(
        f"{'all':<9} {int(tp + fn):>6} {int(tp):>4} {int(fp):>4} {int(fn):>4}"
        f" {total['precision']:>9.3f} {total['recall']:>7.3f}"
    )
    print(f"look-alikes flagged: {flagged}/{len(negatives)}")
    return {"strings": len(rows), "per_kind": per_kind, "all": total, "negatives_flagged": flagged}


def main() -> None:
    report = {
        "development": table("development set (the scanner was tuned on it)", load()),
        "held_out": table("held-out set (written after the scanner was frozen)", load(held_out=True)),
        "blind": table("blind set (written without sight of the scanner)", load(BLIND, held_out=True)),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
