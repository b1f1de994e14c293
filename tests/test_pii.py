"""The PII scanner: checksums, masking, and precision/recall on the labelled set in tests/data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rehearsal.governance.pii import PII_KINDS, luhn_valid, mod97_valid, redact, scan, score

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


def kinds_and_values(text: str) -> list[tuple[str, str]]:
    return [(f.kind, text[f.start : f.end]) for f in scan(text)]


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [("?acct=de44500105175407324931&amount=120", "iban", "de44500105175407324931"),
     ("transfer to nl01 rabo 0311 5928 46 today", "iban", "nl01 rabo 0311 5928 46"),
     ("ni number: jk402173b", "uk_nino", "jk402173b"),
     ("nino jk 40 21 73 b on file", "uk_nino", "jk 40 21 73 b"),
     ("dni 40217356q", "es_dni", "40217356q"),
     ("nie x5308127a", "es_dni", "x5308127a")],
)  # fmt: skip
def test_identifiers_typed_in_lower_case_are_found(text: str, kind: str, value: str) -> None:
    assert kinds_and_values(text) == [(kind, value)]


@pytest.mark.parametrize(
    "text",
    ["commit de44a1f09b7c2e5d8a6b3c4d1e0f9a8b7c6d5e4f", "etag be12c0ffee0ddba11deadbeefcafe0f0",
     "token Jk402173b", "acct=De44500105175407324931", "dni 40217356r", "prefix bg402173a"],
)  # fmt: skip
def test_lower_case_look_alikes_are_not_identifiers(text: str) -> None:
    # Hex digests, mixed-case tokens, a wrong DNI letter and a banned NINO prefix.
    assert scan(text) == []


@pytest.mark.parametrize(
    "code",
    ["RF13 7713 2260 4451", "rf13 7713 2260 4451", "RF06C0FFEE2024001", "UA32 3052 9900 0002 6007 2335 6600",
     "DE88 5001 0517 5407 3249 3"],
)  # fmt: skip
def test_mod97_valid_codes_outside_the_iban_registry_are_not_ibans(code: str) -> None:
    # Creditor references pass mod-97 but RF is no country; the UA and DE codes are one character short.
    assert mod97_valid(code.replace(" ", ""))
    assert scan(f"pay ref {code} today") == []


def test_registry_countries_beyond_europe_are_ibans() -> None:
    assert kinds_and_values("UA74 3052 9900 0002 6007 2335 6600 1") == [
        ("iban", "UA74 3052 9900 0002 6007 2335 6600 1")
    ]
    assert kinds_and_values("XK051212012345678906") == [("iban", "XK051212012345678906")]


def test_an_iban_followed_by_another_is_not_swallowed() -> None:
    text = "move nl01rabo0311592846 to de44500105175407324931 today"
    assert kinds_and_values(text) == [("iban", "nl01rabo0311592846"), ("iban", "de44500105175407324931")]


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [("SSN#412739058", "us_ssn", "412739058"),
     ("/apply?ssn=412739058&zip=10001", "us_ssn", "412739058"),
     ("Social Security Number: 523018846", "us_ssn", "523018846"),
     ("sin=713845923", "ca_sin", "713845923"),
     ("NAS / SIN 237460191", "ca_sin", "237460191"),
     ("SIN: 362501181", "ca_sin", "362501181")],
)  # fmt: skip
def test_nine_bare_digits_after_a_cue_are_an_ssn_or_a_sin(text: str, kind: str, value: str) -> None:
    assert kinds_and_values(text) == [(kind, value)]


@pytest.mark.parametrize(
    "text",
    ["order=412739058", "tracking 412739058", "SSN#666739058", "ssn=412009058", "ssn: 412730000",
     "sin=713845924", "since 713845923", "order=123456789"],
)  # fmt: skip
def test_nine_digits_without_a_cue_or_failing_the_rules_are_not_flagged(text: str) -> None:
    # No cue, SSA rules (area 666, group 00, serial 0000), a SIN failing Luhn, a word that starts with "sin".
    assert scan(text) == []


@pytest.mark.parametrize(
    "cue",
    ["teléfono", "telefono", "tel.", "tfno.", "téléphone", "Telefon", "telefoon", "cellulare", "cell",
     "móvil", "movil", "portable", "Handy"],
)  # fmt: skip
def test_phone_cue_words_in_other_languages(cue: str) -> None:
    assert kinds_and_values(f"{cue} 622 481 937") == [("phone", "622 481 937")]


@pytest.mark.parametrize("number", ["93 412 66 30", "93.412.66.30", "93-412-66-30", "622.481.937"])
def test_spanish_groupings_after_a_cue_are_phones(number: str) -> None:
    assert kinds_and_values(f"teléfono: {number}") == [("phone", number)]


@pytest.mark.parametrize("text", ["lote 93 412 66 30", "pedido 622.481.937", "fecha 2024-03-15"])
def test_spanish_groupings_without_a_cue_are_not_phones(text: str) -> None:
    assert scan(text) == []
