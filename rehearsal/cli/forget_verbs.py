"""Erasure: ``forget`` (a tenant erased now, already erased, or never held here, each said apart) with an
optional signed receipt, and ``check-receipt`` for whoever has to believe it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rehearsal._files import create_new
from rehearsal.cli.common import Report, Verb, audited, keys_from_args, open_memory
from rehearsal.errors import MissingKeyError, NotFoundError, ValidationError
from rehearsal.governance.audited import AuditedMemory
from rehearsal.governance.receipts import check_receipt, sign_receipt, signer_public_key

__all__ = ["EXIT_NOT_HELD", "forget_verbs"]

# ``forget`` of a tenant this memory never held (no entries, no key, no erasure in its audit log): most
# often a mistyped name, which must not pass for an erasure.
EXIT_NOT_HELD = 5


def _forget_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tenant", required=True, help="the tenant to erase")
    p.add_argument(
        "--receipt",
        metavar="FILE",
        type=Path,
        help="write a signed erasure receipt here (never overwritten; 'rehearsal check-receipt' checks it)",
    )


def _forget(args: argparse.Namespace) -> Report:
    if args.receipt is not None and args.receipt.exists():
        raise ValidationError(f"receipt file {str(args.receipt)!r} exists; choose a new name")
    with audited(args, open_memory(args, read_only=False)) as memory:
        before = len(memory)
        held = len(memory.ids({"tenant": args.tenant}))
        erasure: Any = None
        try:
            removed = memory.forget(tenant=args.tenant)
            outcome = "erased"
            erasure = getattr(memory, "last_forget", None)
        except NotFoundError:
            removed = 0
            erasure = memory.forgotten_before(args.tenant) if isinstance(memory, AuditedMemory) else None
            outcome = "already-erased" if erasure is not None else "never-held"
        after = len(memory)
        data: dict[str, Any] = {"path": args.path, "tenant": args.tenant, "outcome": outcome}
        data.update(removed=removed, entries=after, already_absent=outcome != "erased")
        if args.receipt is not None:
            data["receipt"] = _write_receipt(args, memory, outcome, erasure, (before, held, after))
    lines = [_outcome_line(args.tenant, outcome, removed, after, erasure)]
    if args.receipt is not None:
        lines.append(f"receipt written to {args.receipt}; signer {data['receipt']['signer']}")
    return Report(data, lines, status=EXIT_NOT_HELD if outcome == "never-held" else 0)


def _outcome_line(tenant: str, outcome: str, removed: int, entries: int, erasure: Any) -> str:
    if outcome == "erased":
        return f"forgot tenant {tenant!r}: {removed} entries removed, its key destroyed; {entries} remain"
    if outcome == "already-erased":
        return f"tenant {tenant!r} was already erased (audit entry {erasure.seq}); nothing of it is held here"
    return (
        f"tenant {tenant!r} was never held here: no entries, no key, no erasure in the audit log "
        "(check the name: 'rehearsal stats PATH' lists the tenants)"
    )


def _write_receipt(
    args: argparse.Namespace, memory: Any, outcome: str, erasure: Any, counts: tuple[int, int, int]
) -> dict[str, Any]:
    keys = keys_from_args(args)
    if keys is None:
        raise MissingKeyError("an erasure receipt is signed with a key derived from the master key: set it")
    before, held, after = counts
    verification = memory.verify()
    tenant = memory.tenant_ref(args.tenant) if isinstance(memory, AuditedMemory) else args.tenant
    facts = {
        "store_id": memory.store_id,
        "tenant": tenant,
        "outcome": outcome,
        "entries_before": before,
        "entries_after": after,
        "tenant_entries_before": held,
        "tenant_entries_after": len(memory.ids({"tenant": args.tenant})),
        "generation": memory.generation,
        "audit_entry": None if erasure is None else {"seq": erasure.seq, "digest": erasure.digest},
        "verification": {"ok": True, **verification},
    }
    receipt = sign_receipt(facts, keys)
    # Never overwrite a receipt; one is written whole or not at all.
    text = json.dumps(receipt, indent=2, sort_keys=True) + "\n"
    create_new(args.receipt, text.encode("utf-8"), mode=0o644)  # signed facts, no secret: shareable
    return receipt


def _check_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", type=Path, help="the receipt 'rehearsal forget --receipt' wrote")
    p.add_argument(
        "--signer",
        metavar="HEX",
        help="the public key the receipt must be signed by (default: the master key's, if one is set)",
    )
    p.add_argument("--key-file", help="file with the base64 master key, to pin its signer (optional)")


def _check(args: argparse.Namespace) -> Report:
    try:
        receipt = json.loads(args.file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValidationError(f"cannot read receipt {str(args.file)!r}: {exc}") from None
    keys = keys_from_args(args)
    signer = args.signer or (signer_public_key(keys) if keys is not None else None)
    facts = check_receipt(receipt, signer=signer)
    pinned = "the expected signer" if signer is not None else "the key it carries (pass --signer to pin it)"
    line = (
        f"receipt valid, signed by {pinned}: {facts['outcome']} at generation {facts['generation']}, "
        f"tenant entries {facts['tenant_entries_before']} -> {facts['tenant_entries_after']}, "
        f"store verified ({facts['verification'].get('entries', '?')} entries)"
    )
    return Report({"valid": True, "pinned": signer is not None, **facts}, [line])


def forget_verbs() -> dict[str, Verb]:
    return {
        "forget": Verb(
            f"erase a tenant: destroy its key, remove its entries (exit {EXIT_NOT_HELD}: never held here)",
            _forget_args,
            _forget,
        ),
        "check-receipt": Verb("check a signed erasure receipt", _check_args, _check, uses_memory=False),
    }
