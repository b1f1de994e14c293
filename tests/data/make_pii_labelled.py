"""Writes ``pii_labelled.jsonl``: synthetic strings labelled with the personal data they contain.

Run ``python tests/data/make_pii_labelled.py`` to regenerate (seeded, so the file is reproducible). Every
number is made up: card numbers and IBANs get valid check digits from the arithmetic below, not from any
real account. Each line is ``{"text": ..., "pii": [{"kind": ..., "value": ...}]}``; ``value`` is the exact
substring. Negatives (``"pii": []``) are the look-alikes a scanner must not flag: order numbers, dates,
times, versions, ISBNs, tracking numbers, prices, card numbers failing Luhn, IBANs failing mod-97.
The checksum helpers are written here again, on purpose, rather than imported from
``rehearsal.governance.pii``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).with_name("pii_labelled.jsonl")
rng = random.Random(20240611)


def digits(n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def luhn_complete(body: str) -> str:
    total = 0
    for pos, ch in enumerate(reversed(body)):
        d = int(ch)
        if pos % 2 == 0:  # these become odd positions once the check digit is appended
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return body + str((10 - total % 10) % 10)


def iban(country: str, bban: str) -> str:
    rearranged = bban + country + "00"
    check = 98 - int("".join(str(int(c, 36)) for c in rearranged)) % 97
    return f"{country}{check:02d}{bban}"


def group4(code: str) -> str:
    return " ".join(code[i : i + 4] for i in range(0, len(code), 4))


def card(prefix: str, length: int) -> str:
    return luhn_complete(prefix + digits(length - len(prefix) - 1))


def fmt_card(number: str, style: int) -> str:
    if len(number) == 15 and style:
        return f"{number[:4]} {number[4:10]} {number[10:]}"
    sep = ["", " ", "-"][style % 3]
    return sep.join(number[i : i + 4] for i in range(0, len(number), 4))


rows: list[dict[str, object]] = []


def pos(template: str, kind: str, value: str) -> None:
    rows.append({"text": template.format(value), "pii": [{"kind": kind, "value": value}]})


def neg(text: str) -> None:
    rows.append({"text": text, "pii": []})


# -- positives --------------------------------------------------------------------------------------
EMAILS = [
    "jane.doe@example.com", "j.smith+billing@mail.example.co.uk", "o'brien@example.ie".replace("'", ""),
    "MARIA_GARCIA@EXAMPLE.ES", "user123@sub.domain.example.org", "a.b-c@example-mail.net",
    "firstname.lastname@university.edu", "x@ex.io", "support-team@company.example", "li.wei@example.cn",
    "k.mueller@example.de", "noreply+order-5512@shop.example.com", "anna@example.museum",
    "tom.o.connor@example.com.au", "priya.k@example.in",
]  # fmt: skip
EMAIL_T = ["Contact me at {}.", "Email: {}", "please cc {} on the ticket", "{} wrote:", "Reply to <{}> asap",
           "my address is {} thanks", "(sent from {})", "forward it to {}, not to me"]  # fmt: skip
for i, e in enumerate(EMAILS):
    pos(EMAIL_T[i % len(EMAIL_T)], "email", e)

CARD_T = ["Charge my card {} please", "card number: {}", "Visa ending... full number {}.",
          "I paid with {} yesterday", "CC {} exp 04/27", "the number on the card is {}"]  # fmt: skip
card_specs = [("4", 16), ("4", 16), ("4", 16), ("51", 16), ("53", 16), ("55", 16), ("2221", 16),
              ("2720", 16), ("34", 15), ("37", 15), ("6011", 16), ("65", 16), ("35", 16), ("36", 14),
              ("62", 16), ("4", 13), ("4", 19), ("5018", 16)]  # fmt: skip
for i, (prefix, length) in enumerate(card_specs):
    pos(CARD_T[i % len(CARD_T)], "card", fmt_card(card(prefix, length), i))

IBAN_SPECS = [("DE", "N18"), ("GB", "A4N14"), ("FR", "N23"), ("ES", "N20"), ("IT", "A1N22"), ("NL", "A4N10"),
              ("BE", "N12"), ("CH", "N17"), ("AT", "N16"), ("IE", "A4N14"), ("PL", "N24"), ("SE", "N20"),
              ("NO", "N11"), ("PT", "N21"), ("DK", "N14")]  # fmt: skip
IBAN_T = ["IBAN: {}", "please wire it to {} by Friday", "Account {} (main)", "refund to IBAN {}."]


def bban(spec: str) -> str:
    out = ""
    for part in spec.replace("A", " A").replace("N", " N").split():
        n = int(part[1:])
        out += (
            "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(n))
            if part[0] == "A"
            else digits(n)
        )
    return out


for i, (country, spec) in enumerate(IBAN_SPECS):
    code = iban(country, bban(spec))
    pos(IBAN_T[i % len(IBAN_T)], "iban", group4(code) if i % 2 == 0 else code)


def ssn() -> str:
    while True:
        area, group, serial = digits(3), digits(2), digits(4)
        if area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000":
            return area, group, serial


SSN_T = ["SSN {}", "social security number: {}", "my SSN is {} for the form", "SSN# {}."]
for i in range(10):
    a, g, s = ssn()
    pos(SSN_T[i % len(SSN_T)], "us_ssn", f"{a}-{g}-{s}" if i % 3 else f"{a} {g} {s}")

NINO_PREFIXES = ["AB", "CE", "JH", "PR", "WX", "SN", "HT", "ML"]
NINO_T = ["NI number {}", "National Insurance: {}", "my NINO is {}, thanks"]
for i, prefix in enumerate(NINO_PREFIXES):
    d = digits(6)
    value = f"{prefix}{d}{'ABCD'[i % 4]}" if i % 2 else f"{prefix} {d[:2]} {d[2:4]} {d[4:]} {'ABCD'[i % 4]}"
    pos(NINO_T[i % len(NINO_T)], "uk_nino", value)

SIN_T = ["SIN: {}", "Canadian SIN {} on file", "social insurance number {}."]
for i in range(8):
    number = luhn_complete(rng.choice("1234567") + digits(7))
    sep = "-" if i % 2 else " "
    pos(SIN_T[i % len(SIN_T)], "ca_sin", f"{number[:3]}{sep}{number[3:6]}{sep}{number[6:]}")

DNI_T = ["DNI {}", "mi DNI es {}", "NIE: {}", "documento {} adjunto"]
for i in range(8):
    if i < 5:
        n = digits(8)
        value = n + "TRWAGMYFPDXBNJZSQVHLCKE"[int(n) % 23]
    else:
        first, n = rng.choice("XYZ"), digits(7)
        value = first + n + "TRWAGMYFPDXBNJZSQVHLCKE"[int(str("XYZ".index(first)) + n) % 23]
    pos(DNI_T[i % len(DNI_T)], "es_dni", value)

PHONES = [
    "+44 20 7946 0958", "+1 415 555 0132", "+33 1 23 45 67 89", "+49 30 1234567", "+34 612 345 678",
    "+91 98765 43210", "+61 2 9876 5432", "+44 (0)20 7946 0958", "+1-212-555-0147", "+353 1 234 5678",
    "0044 20 7946 0958", "(415) 555-0132", "415-555-0198", "212.555.0147", "1-800-555-0199",
    "020 7946 0958", "07700 900123", "0161 496 0000", "01 23 45 67 89", "06.12.34.56.78", "030 1234567",
    "089/12345678", "+81 3-1234-5678", "+86 10 1234 5678", "+27 21 123 4567",
]  # fmt: skip
PHONE_T = ["call me on {}", "Phone: {}", "reach us at {} (9-5)", "my mobile {}.", "Tel {}",
           "leave a message at {} after 6pm"]  # fmt: skip
for i, p in enumerate(PHONES):
    pos(PHONE_T[i % len(PHONE_T)], "phone", p)
# Written the way people write them, outside any format list.
pos("call me at {} tonight", "phone", "5551234567")
pos("text me {}", "phone", "07700900456")
pos("my number is {}", "phone", "555 0123")  # a 7-digit local number with no cue word the scanner knows

# Two kinds in one string.
a, g, s = ssn()
rows.append(
    {
        "text": f"Name: J. Roe, SSN {a}-{g}-{s}, email j.roe@example.com",
        "pii": [{"kind": "us_ssn", "value": f"{a}-{g}-{s}"}, {"kind": "email", "value": "j.roe@example.com"}],
    }
)
c = fmt_card(card("4", 16), 1)
rows.append(
    {
        "text": f"Card {c} and phone +44 7700 900321",
        "pii": [{"kind": "card", "value": c}, {"kind": "phone", "value": "+44 7700 900321"}],
    }
)

# -- negatives --------------------------------------------------------------------------------------
NEGATIVES = [
    # order, invoice, ticket and reference numbers
    "Order #1042-8831-7720 has shipped", "order no. 2023-118842", "Invoice INV-2024-000731 is attached",
    "ticket 88231 was closed", "Ref: ABX-4471-9920-11", "PO 4500012345 approved", "case number 00123456",
    "RMA 7731-22-1009 issued", "booking reference K7X2PQ", "your order 112-3456789-1234567 (Amazon style)",
    "confirmation code 4Z8-991-2201", "customer id 10029384", "account 00012345 in our CRM",
    "SKU-12345-XL in stock", "part no. 5512-0098-77", "serial SN 4482-1193-22", "batch 2024/06/118",
    # dates and times
    "2023-10-12", "on 12/10/2023 we met", "due 10.12.2023", "2024-06-11T14:30:00Z", "at 14:30:15",
    "from 1999-2004", "born 03/04/1987", "Q3 2023 results", "meeting 2023.11.05 at 09:00",
    "the week of 06 12 2024", "timestamp 1718112000", "20240611 build", "valid until 12-2027",
    # versions, hashes, ids
    "upgrade to v2.13.0", "python 3.11.4", "release 1.2.3.4", "build 20.04.6 LTS",
    "commit 9fceb02d0ae598e95dc970b74767f19372d61af8",
    "uuid 123e4567-e89b-12d3-a456-426614174000", "kernel 6.5.0-1022-gcp", "firmware 4.1.17-200",
    # ISBNs, tracking, postal
    "ISBN 978-3-16-148410-0", "ISBN-10 0-306-40615-2", "isbn 9780306406157", "UPS 1Z999AA10123456784",
    "USPS 9400 1000 0000 0000 0000 00", "FedEx tracking 7489 1234 5678", "DHL 1234567890 out for delivery",
    "ZIP 90210", "postcode SW1A 1AA", "PLZ 10115 Berlin",
    # prices, quantities, math
    "$1,234.56 total", "EUR 2.499,00", "price: 4111.11", "1,234,567 users", "3 + 4 = 7", "50% off",
    "it weighs 12.5 kg", "coordinates 48.8566, 2.3522", "temperature -12.5 C", "pi is 3.14159265358979",
    "IP 192.168.1.254", "port 8080", "room 4-112", "flight BA 0117", "score 10-7", "call at 5 pm",
    # almost-emails
    "user@localhost", "follow @jane_doe", "v1.2@beta build", "name at example dot com", "email me later",
    "foo@bar", "@@example.com",
    # almost-SSN / NINO / SIN / DNI
    "000-12-3456", "666-45-6789", "912-34-5678", "123-00-4567", "123456789", "BG 12 34 56 A",
    "QQ 12 34 56 E", "123-456-789", "12345678A", "X1234567A",
    # almost-phones
    "ext. 1234", "dial 911", "PIN 0000", "+5 points", "code 0800", "serial 1234 5678",
]  # fmt: skip
for text in NEGATIVES:
    neg(text)

# Card numbers failing Luhn and IBANs failing mod-97: one digit changed.
for i, (prefix, length) in enumerate(card_specs[:12]):
    number = card(prefix, length)
    bad = number[:-1] + str((int(number[-1]) + 1 + i % 8) % 10)
    neg(CARD_T[i % len(CARD_T)].format(fmt_card(bad, i)))
for i, (country, spec) in enumerate(IBAN_SPECS[:12]):
    code = iban(country, bban(spec))
    k = len(code) - 1 - i % 5
    bad = code[:k] + str((int(code[k]) + 3) % 10) + code[k + 1 :] if code[k].isdigit() else code[:-1] + "0"
    bad = bad if bad != code else code[:-1] + str((int(code[-1]) + 1) % 10)
    neg(IBAN_T[i % len(IBAN_T)].format(group4(bad)))
# Luhn-valid numbers with no card issuer prefix (e.g. IMEI-like or loyalty numbers).
for prefix in ("7", "8", "9", "1", "0"):
    neg(f"loyalty number {luhn_complete(prefix + digits(14))}")

# -- held out: written after the scanner was frozen, never used to tune it (reported apart) -------------
HELD_OUT: list[tuple[str, list[tuple[str, str]]]] = [
    ("pls ring 415.555.0199 ext 12 before noon", [("phone", "415.555.0199")]),
    ("Kontakt: +49 (0)89 1234 5678", [("phone", "+49 (0)89 1234 5678")]),
    ("WhatsApp +55 11 91234-5678", [("phone", "+55 11 91234-5678")]),
    ("num: 0612345678", [("phone", "0612345678")]),
    ("office 0207 946 0958 / fax 0207 946 0959", [("phone", "0207 946 0958"), ("phone", "0207 946 0959")]),
    ("mail to Dr.Who@Tardis.example.org!", [("email", "Dr.Who@Tardis.example.org")]),
    ("<a href='mailto:sales@example.com'>", [("email", "sales@example.com")]),
    ("ssn:078-05-1120", [("us_ssn", "078-05-1120")]),
    ("NI: QQ123456C is a specimen", []),
    ("card=4012888888881881;exp=12/26", [("card", "4012888888881881")]),
    ("amex 3782-822463-10005", [("card", "3782-822463-10005")]),
    ("MC 5555555555554444 declined", [("card", "5555555555554444")]),
    ("GB82WEST12345698765432 is the account", [("iban", "GB82WEST12345698765432")]),
    ("iban nl91abna0417164300", [("iban", "nl91abna0417164300")]),
    ("SIN 046 454 286", [("ca_sin", "046 454 286")]),
    ("DNI: 12345678-Z", [("es_dni", "12345678-Z")]),
    ("tracking 1Z 999 AA1 01 2345 6784", []),
    ("order 4111-1111-1111 (12 digits)", []),
    ("version 10.0.19045.3693", []),
    ("ISBN 978-0-596-52068-7", []),
    ("on 2024-06-11 at 10:42:07.123", []),
    ("total 1 234 567,89 EUR", []),
    ("GTIN 00012345678905", []),
    ("call center hours 9-17", []),
    ("error code 0x80070005", []),
    ("SWIFT DEUTDEFF500", []),
    ("sort code 20-00-00 (bank, not PII kind here)", []),
    ("lat/long 51.5074,-0.1278", []),
]
for text, labels in HELD_OUT:
    rows.append({"text": text, "pii": [{"kind": k, "value": v} for k, v in labels], "held_out": True})

if __name__ == "__main__":
    OUT.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    n_pos = sum(1 for r in rows if r["pii"])
    print(f"wrote {len(rows)} strings ({n_pos} with PII, {len(rows) - n_pos} without) to {OUT}")
