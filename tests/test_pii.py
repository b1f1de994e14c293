"""The PII scanner: checksums, masking, and precision/recall on the labelled set in tests/data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rehearsal.pii import PII_KINDS, luhn_valid, mod97_valid, redact, scan, score

DATA = Path(__file__).parent / "data" / "pii_labelled.jsonl"


def labelled(*, held_out: bool) -> list[tuple[str, list[tuple[str, int, int]]]]:
    rows = []
    for line in DATA.read_text(encoding="utf-8").splitlines():
        item = json.loads(line)
        if bool(item.get("held_out")) == held_out:
            text = item["text"]
            spans = [
                (p["kind"], text.index(p["value"]), text.index(p["value"]) + len(p["value"]))
                for p in item["pii"]
            ]
            rows.append((text, spans))
    return rows


def test_labelled_set_has_200_strings_with_every_kind_and_negatives() -> None:
    rows = labelled(held_out=False)
    assert len(rows) >= 200
    kinds = [kind for _, spans in rows for kind, _, _ in spans]
    assert all(kinds.count(k) >= 8 for k in PII_KINDS)
    assert sum(1 for _, spans in rows if not spans) >= 100


def test_recall_is_at_least_095_on_every_kind() -> None:
    per_kind = score(labelled(held_out=False))
    low = {k: round(v["recall"], 3) for k, v in per_kind.items() if v["recall"] < 0.95}
    assert not low


def test_look_alikes_are_not_flagged() -> None:
    # Order numbers, dates, ISBNs, tracking numbers, cards failing Luhn, IBANs failing mod-97...
    negatives = [text for text, spans in labelled(held_out=False) if not spans]
    flagged = [text for text in negatives if scan(text)]
    assert len(flagged) <= 2, flagged
    per_kind = score(labelled(held_out=False))
    assert all(v["precision"] >= 0.95 for v in per_kind.values())


@pytest.mark.parametrize(
    ("digits", "valid"),
    [("4111111111111111", True), ("4111111111111112", False), ("378282246310005", True), ("046454286", True),
     ("046454287", False), ("0", False)],
)  # fmt: skip
def test_luhn_check(digits: str, valid: bool) -> None:
    assert luhn_valid(digits) is valid


@pytest.mark.parametrize(
    ("iban", "valid"),
    [("DE89370400440532013000", True), ("DE89370400440532013001", False), ("GB82WEST12345698765432", True),
     ("GB82WEST12345698765433", False), ("gb82west12345698765432", True), ("DE89-3704", False)],
)  # fmt: skip
def test_mod97_check(iban: str, valid: bool) -> None:
    assert mod97_valid(iban) is valid


def test_card_failing_luhn_is_not_a_card_and_passing_one_is() -> None:
    assert [f.kind for f in scan("pay with 4111 1111 1111 1111 now")] == ["card"]
    assert scan("pay with 4111 1111 1111 1112 now") == []


def test_iban_is_cut_at_its_country_length() -> None:
    text = "IBAN DE89 3704 0044 0532 0130 00 2024 payment"
    (finding,) = scan(text)
    assert (finding.kind, text[finding.start : finding.end]) == ("iban", "DE89 3704 0044 0532 0130 00")


def test_a_finding_never_shows_the_matched_text() -> None:
    text = "write to jane.doe@example.com or call +44 20 7946 0958"
    findings = scan(text)
    assert [f.kind for f in findings] == ["email", "phone"]
    shown = repr(findings)
    assert "jane" not in shown
    assert "7946" not in shown
    assert findings[0].masked.endswith("om")
    assert "@" in findings[0].masked


def test_redact_replaces_each_finding_with_its_kind() -> None:
    assert redact("SSN 123-45-6789, mail a@example.org") == "SSN [US_SSN], mail [EMAIL]"


def test_bare_nine_digits_are_not_an_ssn() -> None:
    assert scan("ref 123456789") == []
    assert scan("SSN 000-12-3456") == []
