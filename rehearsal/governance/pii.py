"""A rule-based scanner for personal data in text: what the validation gate's safety suite runs.

Kinds found (``Finding.kind``):

- ``email``        local@domain.tld
- ``card``         payment card numbers: 13-19 digits (spaces or dashes between groups), a known issuer
                   prefix (Visa, Mastercard, Amex, Discover, Diners, JCB, UnionPay, Maestro), Luhn check
- ``iban``         IBANs (spaces allowed every 4 characters): a country in the ISO 13616 registry, that
                   country's length, ISO 7064 mod-97 check
- ``us_ssn``       US Social Security numbers written ``123-45-6789`` or ``123 45 6789``, or 9 bare digits
                   right after a cue (``SSN#123456789``, ``ssn=...``); SSA rules (area not 000, 666 or 9xx;
                   group not 00; serial not 0000)
- ``uk_nino``      UK National Insurance numbers ``AB 12 34 56 C`` (HMRC's prefix rules)
- ``ca_sin``       Canadian Social Insurance numbers ``123-456-782`` / ``123 456 782``, or 9 bare digits
                   right after a cue (``SIN``, ``NAS``); Luhn-valid
- ``es_dni``       Spanish DNI ``12345678Z`` and NIE ``X1234567L``, with the mod-23 check letter
- ``phone``        international numbers (``+`` or ``00`` and a country code, 8-15 digits), and national
                   formats: North American ``(415) 555-0132`` / ``415-555-0132``, UK ``020 7946 0958`` /
                   ``07700 900123``, French ``01 23 45 67 89``, German ``030 1234567``; a bare run of
                   7-15 digits, or a Spanish ``91 555 01 24`` / ``612 345 678``, counts only right after a
                   word like "phone", "tel", "call", "teléfono", "Handy" or "portable"

Letter-bearing identifiers (IBAN, NINO, DNI) are found in upper case or typed all in lower case, never
mixed. Checksums are what separate a card from an order number and an IBAN from a reference code; formats
with no checksum (SSN, phones) rely on separators and boundaries, so a bare 9-digit number is *not* an SSN
unless a cue word names it.
A :class:`Finding` carries positions and a masked form, never the matched text, so a list of findings
can be logged. Overlaps are resolved by the order above (checksummed kinds first).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

__all__ = ["PII_KINDS", "Finding", "luhn_valid", "mod97_valid", "redact", "scan", "score"]

PII_KINDS = ("iban", "card", "email", "us_ssn", "uk_nino", "ca_sin", "es_dni", "phone")


@dataclass(frozen=True)
class Finding:
    """One piece of personal data at ``text[start:end]``; ``masked`` keeps its shape and last 2 characters."""

    kind: str
    start: int
    end: int
    masked: str


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check used by card numbers and Canadian SINs."""
    total = 0
    for pos, ch in enumerate(reversed(digits)):
        d = int(ch)
        if pos % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return len(digits) > 1 and total % 10 == 0


def mod97_valid(iban: str) -> bool:
    """ISO 13616 / ISO 7064 mod-97-10: move the first 4 characters to the end, letters to 10..35."""
    code = iban.upper()
    if not code.isalnum() or len(code) < 5:
        return False
    rearranged = code[4:] + code[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def _single_case(value: str) -> bool:
    """Identifiers are printed in upper case or typed all in lower case (forms, URLs); a mix of the two
    is a word or a random token."""
    return value.isupper() or value.islower()


def _mask(value: str) -> str:
    alnum = [i for i, c in enumerate(value) if c.isalnum()]
    keep = set(alnum[-2:])
    return "".join(c if (i in keep or not c.isalnum()) else "*" for i, c in enumerate(value))


# -- detectors: each yields (start, end) spans of valid matches ----------------------------------------

# No digit or word character right before or after, and not the middle of a longer grouped number.
_NUM_START = r"(?<![\w+.-])(?<!\d[ .-])"
_NUM_END = r"(?![\w-]|[ .-]\d|\.\w)"

_CARD = re.compile(_NUM_START + r"\d(?:[ -]?\d){12,18}" + _NUM_END)
_CARD_PREFIXES: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("4", (13, 16, 19)),
    *((str(p), (16,)) for p in range(51, 56)),
    *((str(p), (16,)) for p in range(2221, 2721)),
    ("34", (15,)),
    ("37", (15,)),
    ("6011", (16, 19)),
    ("65", (16, 19)),
    *((str(p), (16, 19)) for p in range(644, 650)),
    ("36", (14,)),
    ("38", (14,)),
    *((str(p), (14,)) for p in range(300, 306)),
    ("35", (16, 19)),
    ("62", (16, 17, 18, 19)),
    *((str(p), tuple(range(12, 20))) for p in (50, 56, 57, 58, 63, 67)),
)


def _cards(text: str) -> Iterator[tuple[int, int]]:
    for m in _CARD.finditer(text):
        digits = re.sub(r"\D", "", m.group())
        issuer = any(digits.startswith(p) and len(digits) in n for p, n in _CARD_PREFIXES)
        if issuer and luhn_valid(digits):
            yield m.span()


# Every country in the ISO 13616 IBAN registry and its fixed IBAN length. Mod-97 alone is not enough:
# ISO 11649 creditor references (RF, two check digits, a reference) pass it too, and RF is no country.
_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HN": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21,
    "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28,
    "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22,
    "RU": 33, "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 25, "SO": 23, "ST": 25,
    "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip
# A lookahead, so that a candidate running on into the next words ("... to IT60 X054 ...") cannot
# swallow the IBAN that follows it. Case-insensitive patterns here are also ASCII-only ("a"): otherwise
# [A-Z] would match the dotless i, the long s and the Kelvin sign.
_IBAN = re.compile(r"(?ai)(?<![A-Z0-9])(?=([A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}))")


def _ibans(text: str) -> Iterator[tuple[int, int]]:
    for m in _IBAN.finditer(text):
        raw = m.group(1)
        length = _IBAN_LENGTHS.get(raw[:2].upper())
        positions = [i for i, c in enumerate(raw) if c != " "]
        if length is None or length > len(positions):
            continue
        # The regex may run on into the next word; cut at the country's length, which must end a word.
        end = positions[length - 1] + 1
        iban = raw[:end]
        if text[m.start() + end : m.start() + end + 1].isalnum() or not _single_case(iban):
            continue
        if mod97_valid(iban.replace(" ", "")):
            yield m.start(), m.start() + end


_EMAIL = re.compile(
    r"(?<![\w.+%-])[A-Za-z0-9](?:[A-Za-z0-9._%+-]{0,63})@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.[A-Za-z]{2,24}(?![\w-])"
)
_SSN = re.compile(_NUM_START + r"(\d{3})([- ])(\d{2})\2(\d{4})" + _NUM_END)


def _cued_nine_digits(cues: str) -> re.Pattern[str]:
    """9 bare digits right after a cue word: ``SSN#123456789``, ``ssn=123456789&``, ``NAS / SIN 123456789``,
    ``social security number: 123456789``; the digits are group 1."""
    cue = rf"(?<![A-Za-z0-9])(?:{cues})"
    return re.compile(
        rf"(?i){cue}(?:\s*/\s*(?:{cues}))*(?:\s*(?:number|no\.?|nr\.?|num|is|#))?\s*[#:=]?\s*(\d{{9}})"
        + _NUM_END
    )


_SSN_CUED = _cued_nine_digits(r"ssn|social[ -]security")


def _ssn_valid(area: str, group: str, serial: str) -> bool:
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _ssns(text: str) -> Iterator[tuple[int, int]]:
    for m in _SSN.finditer(text):
        if _ssn_valid(m.group(1), m.group(3), m.group(4)):
            yield m.span()
    for m in _SSN_CUED.finditer(text):
        digits = m.group(1)
        if _ssn_valid(digits[:3], digits[3:5], digits[5:]):
            yield m.span(1)


_NINO = re.compile(
    r"(?ai)(?<![A-Z0-9])([A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]) ?(\d{2}) ?(\d{2}) ?(\d{2}) ?([A-D])(?![A-Z0-9])"
)
_NINO_BANNED = frozenset({"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"})


def _ninos(text: str) -> Iterator[tuple[int, int]]:
    for m in _NINO.finditer(text):
        if m.group(1).upper() not in _NINO_BANNED and _single_case(m.group()):
            yield m.span()


_SIN = re.compile(_NUM_START + r"([1-79]\d{2})([- ])(\d{3})\2(\d{3})" + _NUM_END)
# NAS (numéro d'assurance sociale) is the SIN's French name.
_SIN_CUED = _cued_nine_digits(r"sin|nas|social insurance|num[ée]ro d'assurance sociale")


def _sins(text: str) -> Iterator[tuple[int, int]]:
    for m in _SIN.finditer(text):
        if luhn_valid(m.group(1) + m.group(3) + m.group(4)):
            yield m.span()
    for m in _SIN_CUED.finditer(text):
        # No SIN starts with 0 or 8 (as in the separated form above).
        if m.group(1)[0] not in "08" and luhn_valid(m.group(1)):
            yield m.span(1)


_DNI = re.compile(r"(?ai)(?<![A-Z0-9-])([XYZ]-?)?(\d{7,8})-?([A-Z])(?![A-Z0-9])")
_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"


def _dnis(text: str) -> Iterator[tuple[int, int]]:
    for m in _DNI.finditer(text):
        prefix, number = m.group(1), m.group(2)
        if prefix is not None:
            if len(number) != 7:
                continue
            number = str("XYZ".index(prefix[0].upper())) + number
        elif len(number) != 8:
            continue
        if _DNI_LETTERS[int(number) % 23] == m.group(3).upper() and _single_case(m.group()):
            yield m.span()


_PHONE_PATTERNS = [
    # International: + or 00, a country code, then groups (a trunk "(0)" allowed).
    re.compile(
        _NUM_START
        + r"(?:\+|00(?=[1-9]\d{0,2}[ .-]))[1-9]\d{0,2}(?:[ .-]?(?:\(0\)|\(\d{1,4}\)|\d{1,5})){1,6}"
        + _NUM_END
    ),
    # North American: optional 1, (NXX) or NXX, NXX, XXXX.
    re.compile(
        _NUM_START + r"(?:1[ .-])?(?:\([2-9]\d{2}\) ?|[2-9]\d{2}[ .-])[2-9]\d{2}[ .-]\d{4}" + _NUM_END
    ),
    # UK: 0 then 9-10 digits in two or three groups.
    re.compile(_NUM_START + r"0[1-9]\d{1,3}[ -]\d{3,4}(?:[ -]?\d{3,4})?" + _NUM_END),
    # French: 0X XX XX XX XX.
    re.compile(_NUM_START + r"0[1-9](?:[ .-]\d{2}){4}" + _NUM_END),
    # German: 0 area code, then a slash or space and the subscriber number.
    re.compile(_NUM_START + r"0[1-9]\d{1,3}[ /]\d{4,8}" + _NUM_END),
]
# Words that announce a phone number, in English and the languages of the national formats above, plus
# Spanish, Dutch and Italian: teléfono/tfno, móvil, téléphone/tél, portable, Telefon, Handy, telefoon,
# mobiel, cellulare.
_PHONE_CUES = (
    r"phone|t[eé]l[eé]phone|t[eé]l|tel[eé]fono|telefon|telefoon|tfno|tlf|mobile?|mobiel|m[oó]vil|portable"
    r"|handy|cell|cellular|cellulare|call|fax|whatsapp|sms|text"
)
_PHONE_CONTEXT = re.compile(
    rf"(?i)\b(?:{_PHONE_CUES})\b"
    r"(?:\W+(?:me|us|him|her|them|at|on|is|no|number|nr|num|n[uú]mero|num[ée]ro|nummer)\b){0,3}\W{1,4}"
    r"(?P<number>\+?\d[\d ]{5,17}\d"
    # Spanish numbers have no trunk 0 to tell them apart; after a cue, 91 555 01 24 or 612 345 678 with
    # spaces, dots or dashes.
    r"|[6-9]\d(?P<s>[ .-])\d{3}(?P=s)\d{2}(?P=s)\d{2}|[6-9]\d{2}(?P<t>[ .-])\d{3}(?P=t)\d{3})" + _NUM_END
)


def _phones(text: str) -> Iterator[tuple[int, int]]:
    for pattern in _PHONE_PATTERNS:
        for m in pattern.finditer(text):
            n = sum(c.isdigit() for c in m.group())
            if 8 <= n <= 15:
                yield m.span()
    for m in _PHONE_CONTEXT.finditer(text):
        if 7 <= sum(c.isdigit() for c in m.group("number")) <= 15:
            yield m.span("number")


_DETECTORS: tuple[tuple[str, Callable[[str], Iterator[tuple[int, int]]]], ...] = (
    ("iban", _ibans),
    ("card", _cards),
    ("email", lambda t: (m.span() for m in _EMAIL.finditer(t))),
    ("us_ssn", _ssns),
    ("uk_nino", _ninos),
    ("ca_sin", _sins),
    ("es_dni", _dnis),
    ("phone", _phones),
)


def scan(text: str, *, kinds: tuple[str, ...] = PII_KINDS) -> list[Finding]:
    """Findings in ``text``, sorted by position; a span claimed by an earlier kind is not reported again."""
    taken: list[tuple[int, int]] = []
    found: list[Finding] = []
    for kind, detect in _DETECTORS:
        if kind not in kinds:
            continue
        for start, end in sorted(set(detect(text))):
            if any(start < e and s < end for s, e in taken):
                continue
            taken.append((start, end))
            found.append(Finding(kind, start, end, _mask(text[start:end])))
    return sorted(found, key=lambda f: (f.start, f.end))


def redact(text: str, *, kinds: tuple[str, ...] = PII_KINDS) -> str:
    """``text`` with every finding replaced by ``[KIND]``."""
    out, last = [], 0
    for f in scan(text, kinds=kinds):
        out.append(text[last : f.start] + f"[{f.kind.upper()}]")
        last = f.end
    return "".join(out) + text[last:]


def score(
    labelled: Iterable[tuple[str, Sequence[tuple[str, int, int]]]],
) -> dict[str, dict[str, float]]:
    """Precision and recall per kind over ``(text, [(kind, start, end), ...])`` pairs.

    A finding counts as a true positive when a label of the same kind overlaps it; a finding of the wrong
    kind is both a false positive (its kind) and a miss (the label's kind).
    """
    counts = {k: {"tp": 0, "fp": 0, "fn": 0} for k in PII_KINDS}
    for text, labels in labelled:
        found = scan(text)
        matched: set[int] = set()
        for kind, start, end in labels:
            hit = next(
                (i for i, f in enumerate(found) if f.kind == kind and f.start < end and start < f.end), None
            )
            if hit is None:
                counts[kind]["fn"] += 1
            else:
                counts[kind]["tp"] += 1
                matched.add(hit)
        for i, f in enumerate(found):
            if i not in matched:
                counts[f.kind]["fp"] += 1
    out: dict[str, dict[str, float]] = {}
    for kind, c in counts.items():
        tp, fp, fn = c["tp"], c["fp"], c["fn"]
        out[kind] = {
            **{k: float(v) for k, v in c.items()},
            "precision": tp / (tp + fp) if tp + fp else 1.0,
            "recall": tp / (tp + fn) if tp + fn else 1.0,
        }
    return out
