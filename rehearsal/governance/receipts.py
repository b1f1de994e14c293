"""Erasure receipts: what a ``forget`` did, signed so that an auditor can check it without the master key.

A receipt states the memory (its store id), the tenant (as the audit log names it: a keyed pseudonym by
default), the outcome (``erased``, ``already-erased`` or ``never-held``), the entry counts before and
after, the memory's generation, the audit entry that recorded the erasure (sequence number and digest)
and the result of verifying the whole store afterwards. It is signed with Ed25519 under a key derived
from the master key, so the holder of the master key can issue receipts and anyone with the signer's
public key (printed with every receipt) can check one, without being able to decrypt anything.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from rehearsal.crypto.keys import KeyRing
from rehearsal.errors import IntegrityError, ValidationError
from rehearsal.governance.audit_log import canonical_json

__all__ = ["RECEIPT_FORMAT", "check_receipt", "sign_receipt", "signer_public_key"]

RECEIPT_FORMAT = "rehearsal-erasure-receipt/1"
_SIGNING_PURPOSE = "erasure-receipt-signing"
OUTCOMES = ("erased", "already-erased", "never-held")


def _private_key(keys: KeyRing) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(keys.derive_key(_SIGNING_PURPOSE, 32))


def signer_public_key(keys: KeyRing) -> str:
    """The hex public key that checks receipts issued under ``keys`` (safe to publish)."""
    raw = _private_key(keys).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return raw.hex()


def sign_receipt(facts: Mapping[str, Any], keys: KeyRing) -> dict[str, Any]:
    """``facts`` (JSON values) with the format, the time, the signer and an Ed25519 signature added."""
    if facts.get("outcome") not in OUTCOMES:
        raise ValidationError(
            f"a receipt's outcome must be one of {list(OUTCOMES)}, got {facts.get('outcome')!r}"
        )
    body = {"format": RECEIPT_FORMAT, **facts, "issued_at": round(time.time(), 3)}
    body["signer"] = signer_public_key(keys)
    return {**body, "signature": _private_key(keys).sign(canonical_json(body)).hex()}


def check_receipt(receipt: Mapping[str, Any], *, signer: str | None = None) -> dict[str, Any]:
    """The receipt's facts once its signature checks out (against ``signer`` when given, else against the
    public key it carries, which only proves it was not altered since signing); IntegrityError if not."""
    if receipt.get("format") != RECEIPT_FORMAT:
        raise ValidationError(
            f"not an erasure receipt (format {receipt.get('format')!r}, expected {RECEIPT_FORMAT})"
        )
    body = {k: v for k, v in receipt.items() if k != "signature"}
    carried = body.get("signer")
    if signer is not None and carried != signer:
        raise IntegrityError(f"the receipt was signed by {carried!r}, not by the expected signer {signer!r}")
    try:
        public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(str(carried)))
        public.verify(bytes.fromhex(str(receipt.get("signature"))), canonical_json(body))
    except (ValueError, InvalidSignature):
        raise IntegrityError(
            "the receipt's signature does not check out: it was altered or not signed"
        ) from None
    return body
