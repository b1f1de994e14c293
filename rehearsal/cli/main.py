"""The ``rehearsal`` command line: create, fill, search, check and govern a memory on disk.

Each verb is one small handler in :data:`VERBS` that returns a :class:`Report`: a JSON-able dict (printed
with ``--json``) and the lines a person reads. Errors print one line, ``rehearsal: error: <message>``, on
stderr and exit 2 (usage) or 1 (any :class:`RehearsalError`). The master key comes from
``REHEARSAL_MASTER_KEY`` or ``--key-file`` and is never printed, except by ``keygen``, whose job it is.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn, TextIO

from rehearsal import __version__
from rehearsal.cli.common import (
    ANCHOR_HELP,
    EXIT_ERROR,
    EXIT_FAIL,
    EXIT_NEEDS_APPROVAL,
    EXIT_OK,
    EXIT_USAGE,
    KEY_ENV,
    Report,
    Verb,
    audited,
    encrypted,
    keys_from_args,
    memory_folder,
    missing_key,
    open_memory,
    parse_where_option,
)
from rehearsal.cli.deploy_verbs import deploy_verbs
from rehearsal.cli.encoder_options import add_encoder_arguments
from rehearsal.cli.forget_verbs import forget_verbs
from rehearsal.cli.gate_verbs import gate_args, run_gate
from rehearsal.cli.governance_verbs import governance_verbs
from rehearsal.cli.ingest_verbs import ingest_verbs
from rehearsal.cli.memory_verbs import memory_verbs
from rehearsal.cli.records import id_list, positive_int
from rehearsal.cli.run_verbs import (
    add_set_argument,
    add_verbose_argument,
    load_run_config,
    quiet_libraries,
    run_verbs,
    stdout_to_stderr,
)
from rehearsal.crypto.keys import KeyRing
from rehearsal.errors import (
    RehearsalError,
    UpdateBlockedError,
    ValidationError,
    WrongKeyError,
)
from rehearsal.governance.audit_log import AuditLog, default_log_path
from rehearsal.store.failures import storage_errors
from rehearsal.store.registry import is_server
from rehearsal.store.urls import redact, redact_text
from rehearsal.threads import THREADS_ENV, size_thread_pools

__all__ = ["KEY_ENV", "VERBS", "Report", "Verb", "build_parser", "main"]

PROG = "rehearsal"


class UsageError(Exception):
    """A command line argparse rejects (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # No abbreviated options: "--k 2" must not be read as "--key-file 2" (the verbs' parsers are of
        # this class too, through add_subparsers).
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    # argparse prints usage and exits; we want one line and a status the caller controls.
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


# -- keys and opening --------------------------------------------------------------------------------


def _search_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("queries", nargs="+", metavar="QUERY", help="one or more query texts")
    p.add_argument("-k", type=positive_int, default=5, help="hits per query (default: 5)")
    p.add_argument(
        "--where", metavar="JSON", help='a metadata filter, e.g. \'{"task": {"$in": ["a", "b"]}}\''
    )
    p.add_argument("--with-text", action="store_true", help="decrypt and show each hit's text")
    add_encoder_arguments(p)


def _search(args: argparse.Namespace) -> Report:
    where = parse_where_option(args.where)
    with open_memory(args, read_only=True) as memory:
        if args.with_text and memory.embedding_only:
            raise ValidationError("--with-text: this memory is embedding-only and stores no text")
        results = memory.search(args.queries, args.k, where=where)
        found = sorted({hit.id for hits in results for hit in hits})
        by_id = dict(zip(found, memory.get_texts(found), strict=True)) if args.with_text and found else {}
    out: list[dict[str, Any]] = []
    lines: list[str] = []
    for query, hits in zip(args.queries, results, strict=True):
        rows: list[dict[str, Any]] = []
        lines.append(f"query: {query}" + ("" if hits else "  (no hits)"))
        for rank, hit in enumerate(hits, start=1):
            rows.append({"id": hit.id, "score": round(hit.score, 6), "metadata": hit.metadata})
            meta = " ".join(
                f"{k}={json.dumps(v)}" for k, v in hit.metadata.items() if v not in (None, [], {})
            )
            lines.append(f"  {rank:>3}. id={hit.id} score={hit.score:.4f} {meta}".rstrip())
            if args.with_text:
                rows[-1]["text"] = by_id[hit.id]
                lines.append(f"       {by_id[hit.id]}")
        out.append({"query": query, "hits": rows})
    return Report({"path": args.path, "k": args.k, "where": where, "results": out}, lines)


def _stats(args: argparse.Namespace) -> Report:
    with open_memory(args, read_only=True) as memory:
        stats = memory.stats()
    return Report(stats, [f"{name}: {json.dumps(value)}" for name, value in stats.items()])


def _verify(args: argparse.Namespace) -> Report:
    with open_memory(args, read_only=True) as memory:
        counts = memory.verify()
    line = "ok: {entries} entries, {texts} texts and {vectors} vectors verified at generation {generation}"
    metadata = (
        "catalog metadata authenticated under the store's keys"
        if counts.get("metadata_keyed")
        else "catalog metadata checksummed only: a store made without keys has nothing to authenticate it"
        " with, so an edit by someone who can write the folder goes unnoticed"
    )
    return Report({"path": args.path, "ok": True, **counts}, [line.format(**counts), metadata])


def _delete_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ids", type=id_list, required=True, metavar="1,2,3", help="the ids to delete")


def _delete(args: argparse.Namespace) -> Report:
    with audited(args, open_memory(args, read_only=False)) as memory:
        removed = memory.delete(args.ids)
        entries = len(memory)
    data = {"path": args.path, "deleted": removed, "ids": args.ids, "entries": entries}
    return Report(data, [f"deleted {removed} entries; {entries} remain"])


def _rotate_args(p: argparse.ArgumentParser) -> None:
    new = p.add_mutually_exclusive_group(required=True)
    new.add_argument("--new-key-file", help="file with the new base64 master key (mode 0600)")
    new.add_argument("--new-key-env", metavar="VAR", help="environment variable holding the new master key")


def _rotate_key(args: argparse.Namespace) -> Report:

    if args.new_key_file is not None:
        new_keys = KeyRing.from_file(args.new_key_file)
    else:
        new_keys = KeyRing.from_env(args.new_key_env)
    old = keys_from_args(args)
    if not encrypted(args.path):
        raise ValidationError(f"memory at {args.path!r} is not encrypted; it has no master key to rotate")
    if old is None:
        raise missing_key(args.path)
    if new_keys == old:
        raise ValidationError("the new master key is the key this memory already uses")
    try:
        memory = open_memory(args, read_only=False, keys=old)
    except WrongKeyError:
        return _finish_rotation(args, old, new_keys)
    with audited(args, memory, keys=old) as logged:
        logged.rotate_keys(new_keys)
    data = {"path": args.path, "old_fingerprint": old.fingerprint, "new_fingerprint": new_keys.fingerprint}
    line = f"rotated the master key of {args.path}: {old.fingerprint} -> {new_keys.fingerprint}"
    return Report(data, [line, "the old key no longer opens this memory"])


def _finish_rotation(args: argparse.Namespace, old: KeyRing, new_keys: KeyRing) -> Report:
    """The memory opens only with the new key: a rotation died after the memory was rewrapped and before
    its audit log was. Finish it (the log's rotation entry is signed with the old key, as always)."""

    with open_memory(args, read_only=False, keys=new_keys):  # WrongKeyError: neither key opens it
        if not is_server(args.path):  # the CLI keeps no audit log for a server memory (see ``audited``)
            log = AuditLog.open(default_log_path(args.path), old, create=False)
            log.rotate(new_keys, actor="cli")
    data = {"path": args.path, "old_fingerprint": old.fingerprint, "new_fingerprint": new_keys.fingerprint}
    data["finished_interrupted_rotation"] = True
    return Report(data, [f"finished an interrupted rotation of {args.path}: its audit log is now keyed too"])


def _keygen_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", metavar="FILE", help="write the key to a new FILE, mode 0600 (default: stdout)")


def _keygen(args: argparse.Namespace) -> Report:

    keys = KeyRing.generate()
    if args.out is None:
        return Report({"key": keys.export_base64(), "fingerprint": keys.fingerprint}, [keys.export_base64()])
    keys.to_file(args.out)
    line = f"wrote a new master key to {args.out} (fingerprint {keys.fingerprint})"
    return Report({"path": args.out, "fingerprint": keys.fingerprint}, [line])


# To add a verb (e.g. ``run``, ``bench``): write ``_name_args`` and ``_name``, and register it here.
def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", metavar="CONFIG", help="run config (.toml, .yaml or .json)")
    p.add_argument("--output-dir", help="where results go (default: the config's output_dir)")
    p.add_argument("--resume", action="store_true", help="skip the tasks an interrupted run finished")
    p.add_argument("--key-file", help=f"file with the memory's base64 master key (default: ${KEY_ENV})")
    add_set_argument(p)
    add_verbose_argument(p)


def _run(args: argparse.Namespace) -> Report:
    from rehearsal.runner.preflight import preflight

    config = load_run_config(args)
    # Everything that can be wrong with the command is checked before torch and the model load.
    checked = preflight(config, output_dir=args.output_dir, resume=args.resume, keys=keys_from_args(args))
    # Only this verb needs torch and transformers (seconds to import): the others start without them.
    from rehearsal.runner.loop import run

    try:
        with stdout_to_stderr(), quiet_libraries(args.verbose):  # stdout is for the report
            result = run(config, output_dir=args.output_dir, resume=args.resume, keys=checked.keys)
    except UpdateBlockedError as exc:
        # Not an error of the command: the gate did its job. Exit codes as for "rehearsal gate".
        status = EXIT_NEEDS_APPROVAL if exc.decision == "needs-approval" else EXIT_FAIL
        data = {"blocked": True, "decision": exc.decision, "reasons": exc.reasons, "update": exc.update}
        lines = [f"blocked: {exc}"]
        if exc.decision == "needs-approval" and exc.update is not None:
            folder = args.output_dir or config.output_dir
            key = f" --key-file {args.key_file}" if args.key_file else ""
            approve = f"rehearsal approve {folder} {exc.update} --approver NAME{key}"
            resume = f"rehearsal run {args.config} --resume{key}"
            data["next"] = [approve, resume]
            lines += [
                "to ship it, a person accepts the flags, then the run resumes:",
                f"  {approve}",
                f"  {resume}",
            ]
        else:
            lines.append("the phase was undone; nothing of it shipped")
        return Report(data, lines, status=status)
    return Report(result.to_dict(), [result.to_markdown()])


def _bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--queries", type=int, default=200, help="stored vectors used as queries (seeded)")
    p.add_argument("-k", type=int, default=10, help="neighbours per query")
    p.add_argument("--seed", type=int, default=0)


def _bench(args: argparse.Namespace) -> Report:
    with open_memory(args, read_only=True) as memory:
        r = memory.bench(queries=args.queries, k=args.k, seed=args.seed)
    index = f"index {r['index']} (nprobe {r['nprobe']})"
    lines = [
        f"{r['entries']} entries, {index}, {r['queries']} queries, k={r['k']}",
        f"recall@{r['k']} {r['recall_at_k']:.4f} against exact search",
        f"index {r['index_ms_per_query']:.3f} ms/query = {r['speedup_vs_exact']:.1f}x exact search "
        f"({r['exact_ms_per_query']:.3f} ms/query)",
        f"memory search with catalog lookups {r['memory_ms_per_query']:.3f} ms/query",
    ]
    return Report({"path": args.path, **r}, lines)


VERBS: dict[str, Verb] = {
    **ingest_verbs(),  # init, ingest
    "search": Verb("nearest entries to query texts", _search_args, _search),
    "stats": Verb("entries, tenants, tasks and sizes", lambda p: None, _stats),
    "verify": Verb("authenticate every record and check the index", lambda p: None, _verify),
    "delete": Verb("remove entries by id", _delete_args, _delete),
    "rotate-key": Verb("rewrap the data keys under a new master key", _rotate_args, _rotate_key),
    "keygen": Verb("make a new master key (file or stdout)", _keygen_args, _keygen, uses_memory=False),
    "bench": Verb("recall and speed of the memory's search against exact search", _bench_args, _bench),
}
VERBS["run"] = Verb("a continual fine-tuning run from a TOML/YAML config", _run_args, _run, uses_memory=False)
VERBS["gate"] = Verb("validate an update: regression and PII safety", gate_args, run_gate, uses_memory=False)
VERBS.update(memory_verbs())  # get, peek, count, export
VERBS.update(forget_verbs())  # forget, check-receipt
VERBS.update(run_verbs())  # compare
VERBS.update(governance_verbs())  # audit, expire, versions, rollback: rehearsal/cli_governance.py
VERBS.update(deploy_verbs())  # init-deployment, update, shadow, promote, predict, report


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Rehearsal memories for continual fine-tuning.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for name, verb in VERBS.items():
        p = sub.add_parser(name, help=verb.help, description=verb.help)
        if verb.uses_memory:
            p.add_argument("path", metavar="PATH", help="the memory folder, or a postgresql:// URL")
            p.add_argument("--key-file", help=f"file with the base64 master key (default: ${KEY_ENV})")
            p.add_argument(
                "--vectors",
                metavar="URL",
                help="vector index on a server, milvus://HOST:PORT (default: the memory's own, as created)",
            )
            p.add_argument("--anchor", metavar="FILE", help=ANCHOR_HELP)
        verb.add_arguments(p)
        p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
        p.add_argument(
            "--threads",
            type=int,
            metavar="N",
            help=f"threads of torch, FAISS and tokenizers (default: ${THREADS_ENV}, else the free cores)",
        )
    return parser


def _print(report: Report, as_json: bool, out: TextIO) -> None:
    # Every report goes through the one redaction: no verb's output carries a server URL's password.
    if as_json:
        out.write(json.dumps(redact(report.data), indent=2, ensure_ascii=False, default=str) + "\n")
    elif report.lines:
        out.write("\n".join(redact_text(line) for line in report.lines) + "\n")


def _fail(message: str, status: int) -> int:
    first = " ".join(redact_text(message).split())  # one line, whatever the message held
    sys.stderr.write(f"{PROG}: error: {first}\n")
    return status


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # ours is the only bar a user needs
    if "transformers" in sys.modules:
        # Imported before us (a caller running the CLI in-process): it read the variable already.
        sys.modules["transformers"].utils.logging.disable_progress_bar()
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help and --version
        return int(exc.code or 0)
    except UsageError as exc:
        return _fail(f"{exc} (see '{PROG} --help')", EXIT_USAGE)
    try:
        # Before any verb imports torch or FAISS: they size their pools once, at import.
        size_thread_pools(args.threads)
        if VERBS[args.verb].uses_memory:
            args.path = memory_folder(args.path)
        with storage_errors(f"{PROG} {args.verb}"):  # a sqlite3 error that escaped the stores' own mapping
            report = VERBS[args.verb].run(args)
    except RehearsalError as exc:
        return _fail(str(exc), EXIT_ERROR)
    except OSError as exc:
        where = f" {exc.filename!r}" if exc.filename else ""
        return _fail(f"{exc.strerror or exc}{where}", EXIT_ERROR)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    _print(report, args.json, sys.stdout)
    return report.status or EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
