"""Governance verbs of the ``rehearsal`` CLI: ``audit verify``, ``expire``, ``versions``, ``rollback``,
``approve``.

:func:`governance_verbs` is called by :mod:`rehearsal.cli.main` while it builds its ``VERBS``; what the
verb modules share lives in :mod:`rehearsal.cli.common`.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from rehearsal.cli.audit_show import show_audit
from rehearsal.cli.common import (
    ANCHOR_HELP,
    KEY_ENV,
    Report,
    Verb,
    encrypted,
    keys_from_args,
    memory_folder,
    open_memory,
    require_memory,
    required_keys,
)
from rehearsal.cli.records import positive_int
from rehearsal.crypto.keys import KeyRing
from rehearsal.deployment.folder import has_pending, is_deployment
from rehearsal.errors import ConfigError, MissingKeyError, ValidationError
from rehearsal.governance.anchoring import anchor_of, check_log_anchor
from rehearsal.governance.audit_key import AuditKey
from rehearsal.governance.audit_log import AuditLog, default_log_path
from rehearsal.governance.audited import (
    bound_store_id,
    check_log_binding,
    last_audited_generation,
    reconcile_log,
)
from rehearsal.governance.retention import expire, parse_now, unreadable_retention
from rehearsal.governance.updates import approve_update
from rehearsal.governance.versions import VERSIONS_FILE, is_sealed, list_versions, rollback
from rehearsal.memory.anchor import read_anchor, write_anchor
from rehearsal.store.layout import is_memory_folder
from rehearsal.store.registry import is_server

if TYPE_CHECKING:
    from rehearsal.governance.versions import Version

__all__ = ["governance_verbs"]


def _log_path(args: argparse.Namespace) -> Path:
    """``--log``, else ``PATH/audit.log``. A memory on a server has no folder: its log is a file the
    caller names (a URL taken as a folder would put a ``postgresql:`` tree in the working directory)."""
    if args.log is not None:
        return Path(args.log)
    if is_server(args.path):
        raise ConfigError(
            f"the memory at {memory_folder(args.path)} lives on a server and has no folder to keep its audit"
            " log in: pass --log FILE (the same file on every later governance command)"
        )
    return default_log_path(args.path)


# -- audit -----------------------------------------------------------------------------------------


def _audit_args(p: argparse.ArgumentParser) -> None:

    # "verify" may be left out (the default action), so "rehearsal audit PATH" parses like other verbs.
    p.add_argument(
        "words",
        nargs="+",
        metavar="[verify|show|export-key|anchor] PATH",
        help="verify the log's chain, show its entries, write its verification key (export-key --out "
        "FILE: checks the log without the master key, cannot decrypt), or anchor the memory and its log "
        "(anchor --out FILE: a file to keep elsewhere, for --anchor); PATH is the memory (log: "
        "PATH/audit.log)",
    )
    p.add_argument("--log", metavar="FILE", help="the audit log file (default: PATH/audit.log)")
    p.add_argument("--last", type=positive_int, metavar="N", help="show: only the last N entries")
    p.add_argument(
        "--verify-key",
        metavar="FILE",
        help="verify (or show) with this verification key instead of the master key",
    )
    p.add_argument(
        "--out",
        metavar="FILE",
        help="export-key: the new key file (owner-only, never overwritten); anchor: the anchor file",
    )
    p.add_argument("--anchor", metavar="FILE", help=f"verify: {ANCHOR_HELP}; and its log older too")
    p.add_argument("--key-file", help=f"file with the base64 master key (default: ${KEY_ENV})")


def _audit(args: argparse.Namespace) -> Report:

    action = "verify"
    if len(args.words) == 2 and args.words[0] in ("verify", "show", "export-key", "anchor"):
        action, args.path = args.words
    elif len(args.words) == 1:
        args.path = args.words[0]
    else:
        usage = "rehearsal audit [verify|show|export-key|anchor] PATH"
        raise ValidationError(f"usage: {usage}, got {' '.join(args.words)!r}")
    if args.last is not None and action != "show":
        raise ValidationError("--last applies to 'rehearsal audit show'")
    if (args.out is None) != (action not in ("export-key", "anchor")):
        raise ValidationError(
            "'rehearsal audit export-key' and 'audit anchor' need --out FILE, and only they take --out"
        )
    if args.anchor is not None and (action != "verify" or args.verify_key is not None):
        raise ValidationError("--anchor applies to 'rehearsal audit verify' with the master key")
    if args.verify_key is not None and action == "export-key":
        raise ValidationError(
            "export-key derives the verification key from the master key: drop --verify-key"
        )
    args.path = memory_folder(args.path)
    path = _log_path(args)
    if action == "export-key":
        return _export_audit_key(path, required_keys(args), args.out)
    if action == "anchor":
        return _anchor(args, path)
    keys = AuditKey.from_file(args.verify_key) if args.verify_key is not None else required_keys(args)
    log = AuditLog.open(path, keys, create=False)
    if action == "show":
        return show_audit(log, last=args.last)
    entries = log.entries()
    bound, staged = None, None
    if isinstance(keys, AuditKey):
        pass  # the memory's store id and generation need the master key: the chain alone is checked
    elif is_server(args.path) or is_memory_folder(args.path):
        # A chain that verifies proves only that the log is whole: it must also be this memory's log, and
        # as new as the memory (not another store's log, nor an older copy of its own).
        with open_memory(args, read_only=True, keys=keys) as memory:
            if args.anchor is not None:  # the memory was checked as it opened; its log is checked here
                check_log_anchor(read_anchor(args.anchor, keys), log)
            staged = _staged_candidate(args.path, keys, log)
            entries = check_log_binding(log, memory, in_step=staged is None)
            bound = bound_store_id(log)
    kinds: dict[str, int] = {}
    for entry in entries:
        kinds[entry.kind] = kinds.get(entry.kind, 0) + 1
    last = entries[-1].seq if entries else None
    data = {
        "log": str(path),
        "ok": True,
        "entries": len(entries),
        "last_seq": last,
        "kinds": kinds,
        "store_id": bound,
    }
    binding = ", bound to this memory" if bound is not None else ""
    if not isinstance(keys, AuditKey) and bound is not None and staged is not None:
        binding += f"; staged candidate {staged} is logged when it is promoted or rolled back"
        data["staged"] = staged
    if isinstance(keys, AuditKey):
        binding = "; with a verification key, so not checked against the memory itself"
    line = f"ok: {len(entries)} audit entries verified in {path} (chain, MACs and head{binding})"
    return Report(data, [line])


def _anchor(args: argparse.Namespace, path: Path) -> Report:
    """Write where the memory and its audit log stand to ``--out`` (a file the user keeps elsewhere)."""
    keys = keys_from_args(args)
    log = AuditLog.open(path, keys, create=False) if keys is not None and path.is_file() else None
    with open_memory(args, read_only=True, keys=keys) as memory:
        if log is not None:
            check_log_binding(log, memory, in_step=False)
        anchor = anchor_of(memory, log)
    write_anchor(args.out, anchor, keys)
    data = {"path": args.path, "anchor": args.out, **dataclasses.asdict(anchor)}
    line = f"anchored {args.path} at generation {anchor.generation} in {args.out}: keep it outside the folder"
    return Report(data, [line])


def _staged_candidate(memory_path: str, keys: KeyRing, log: AuditLog) -> str | None:
    """The update id of the candidate staged in the deployment that keeps ``memory_path``, when the log
    stops exactly where it was staged: its entries are in the memory and reach the log only when it is
    promoted (or leave with a rollback), so the memory being ahead of the log is not a tamper sign then."""
    folder = Path(memory_path).parent
    if is_server(memory_path) or not is_deployment(folder):
        return None
    from rehearsal.deployment.folder import Deployment

    pending = Deployment.open(folder, keys).pending()
    if pending is None or last_audited_generation(log) != pending.generation_before:
        return None
    return pending.update


def _export_audit_key(path: Path, keys: KeyRing, out: str) -> Report:
    AuditLog.open(path, keys, create=False).verify()  # a key to a log that does not verify helps nobody
    AuditKey.of(keys).to_file(out)
    line = f"wrote the verification key of {path} to {out} (owner-only; it verifies, cannot decrypt)"
    return Report({"log": str(path), "out": out, "fingerprint": keys.fingerprint}, [line])


# -- expire ----------------------------------------------------------------------------------------


def _expire_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--now", metavar="DATE", help="expire as of this ISO date or datetime (default: now, UTC)")
    p.add_argument("--dry-run", action="store_true", help="list what would expire; change nothing")
    p.add_argument("--log", metavar="FILE", help="the audit log file (default: PATH/audit.log)")


def _expire(args: argparse.Namespace) -> Report:

    now = parse_now(args.now)
    keys = keys_from_args(args)
    with open_memory(args, read_only=args.dry_run) as memory:
        # An unencrypted embedding-only memory has no master key, hence no audit log to write.
        log = (
            None
            if args.dry_run or keys is None or not encrypted(args.path)
            else AuditLog.open(_log_path(args), keys)
        )
        if log is not None:
            reconcile_log(memory, log, actor="cli")  # what committed unaudited is logged before this entry
        ids = expire(memory, now=now, log=log, dry_run=args.dry_run, actor="cli")
        unreadable = unreadable_retention(memory)
        entries = len(memory)
    verb = "would expire" if args.dry_run else "expired"
    data = {"path": args.path, "now": now.isoformat(), "dry_run": args.dry_run, "expired": ids}
    data.update(entries=entries, audited=log is not None, unreadable=unreadable)
    lines = [f"{verb} {len(ids)} records as of {now.isoformat()}; {entries} entries now"]
    if unreadable:
        # Reported, not fatal: these records are kept until someone fixes their date.
        lines.append(f"{len(unreadable)} records kept: their retain_until is unreadable")
        lines += [f"  {reason}" for reason in list(unreadable.values())[:10]]
    return Report(data, lines)


# -- versions and rollback ---------------------------------------------------------------------------


def _versions(args: argparse.Namespace) -> Report:
    require_memory(args.path)
    deployment = Path(args.path).parent
    plain = (Path(args.path) / VERSIONS_FILE).is_file() and not is_sealed(args.path)
    if is_deployment(deployment) and not plain:
        from rehearsal.deployment.folder import Deployment

        # A deployment's versions file is sealed and bound to it: read through the deployment (checked),
        # which refuses a deleted one rather than listing "no versions recorded".
        keys = keys_from_args(args)
        if keys is None:
            raise MissingKeyError(f"a deployment's versions are sealed: set {KEY_ENV} or pass --key-file")
        versions, current = Deployment.open(deployment, keys).versions()
    else:
        versions, current = list_versions(args.path)
    rows = [dataclasses.asdict(v) for v in versions]
    lines = [
        f"{'*' if v.version == current else ' '} v{v.version}: generation {v.generation},"
        f" {v.entries} entries, weights {v.weights}{_weights_note(v)}"
        for v in versions
    ]
    return Report(
        {"path": args.path, "current": current, "versions": rows}, lines or ["no versions recorded"]
    )


def _weights_note(version: Version) -> str:
    if version.withdrawn:
        return " (withdrawn)"
    return "" if Path(version.weights).exists() else " (weights missing: pruned by keep_weights, or moved)"


def _rollback_args(p: argparse.ArgumentParser) -> None:
    # Optional in the parser so that every verb parses as "VERB PATH"; required by the handler.
    p.add_argument("version", metavar="VERSION", nargs="?", type=int, help="the version to return to")
    p.add_argument("--log", metavar="FILE", help="the audit log file (default: PATH/audit.log)")


def _rollback(args: argparse.Namespace) -> Report:

    if args.version is None:
        raise ValidationError("rollback needs a VERSION (see 'rehearsal versions PATH')")
    keys = keys_from_args(args)
    deployment = Path(args.path).parent
    if is_deployment(deployment) and args.log is None:
        from rehearsal.deployment.update import rollback as rollback_deployment

        # A deployment also trims its regression suite and discards a staged candidate.
        done = rollback_deployment(deployment, args.version, keys=keys)
        line = f"rolled back {deployment} to v{done['version']}: {done['removed']} later entries removed"
        return Report({"path": str(deployment), **done, "audited": True}, [line])
    with open_memory(args, read_only=False) as memory:
        log = AuditLog.open(_log_path(args), keys) if keys is not None and encrypted(args.path) else None
        if log is not None:
            reconcile_log(memory, log, actor="cli")  # what committed unaudited is logged before this entry
        result = rollback(memory, args.version, log=log, actor="cli")
        entries = len(memory)
    data = {"path": args.path, **dataclasses.asdict(result), "entries": entries, "audited": log is not None}
    removed = len(result.removed)
    line = f"rolled back to v{result.version}: {removed} later entries removed; weights {result.weights}"
    lines = [line] if result.exact else [line, "not exact: entries erased since that version stay erased"]
    if not Path(result.weights).exists():
        missing = "its weights are missing (keep_weights pruned them, or they moved)"
        lines.append(f"{missing}: the memory is restored, the model is not")
    return Report(data, lines)


# -- approval --------------------------------------------------------------------------------------


def _approve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("update", metavar="UPDATE_ID", nargs="?", help="the blocked update's id (run-…/phase-N)")
    p.add_argument("--approver", required=True, help="who accepts the flagged update (recorded in the log)")
    p.add_argument("--log", metavar="FILE", help="the audit log file (default: PATH/audit.log)")


def _approve(args: argparse.Namespace) -> Report:

    if not args.update:
        raise ValidationError("usage: rehearsal approve PATH UPDATE_ID --approver NAME")
    require_memory(args.path)
    log = AuditLog.open(_log_path(args), required_keys(args), create=False)
    entry = approve_update(log, args.update, args.approver)
    data = {"path": args.path, "update": args.update, "approver": args.approver, "seq": entry.seq}
    data["next"] = _after_approval(args)
    line = f"approved {args.update} by {args.approver} (audit entry {entry.seq}); to ship it:"
    return Report(data, [line, f"  {data['next']}"])


def _after_approval(args: argparse.Namespace) -> str:
    """The exact command that ships an approved update from PATH."""
    folder = Path(args.path)
    key = f" --key-file {args.key_file}" if args.key_file else ""
    if is_deployment(folder):
        if has_pending(folder):  # the staged candidate waits for promote
            return f"rehearsal promote {args.path}{key}"
        return f"rehearsal update {args.path} --data FILE{key}  (FILE: the blocked update's data, unchanged)"
    return f"rehearsal run CONFIG --resume  (CONFIG: the run config that made {args.path})"


def governance_verbs() -> dict[str, Verb]:

    return {
        "audit": Verb(
            "verify or show the memory's tamper-evident audit log", _audit_args, _audit, uses_memory=False
        ),
        "versions": Verb("list recorded model versions", lambda p: None, _versions),
        "rollback": Verb("return the model pointer and the memory to a version", _rollback_args, _rollback),
        "expire": Verb("remove records whose retain_until date has passed", _expire_args, _expire),
        "approve": Verb("record an approver for an update the gate flagged", _approve_args, _approve),
    }
