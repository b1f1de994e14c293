"""The ``rehearsal`` command line: create, fill, search, check and govern a memory on disk.

Each verb is one small handler in :data:`VERBS` that returns a :class:`Report`: a JSON-able dict (printed
with ``--json``) and the lines a person reads. Errors print one line, ``rehearsal: error: <message>``, on
stderr and exit 2 (usage) or 1 (any :class:`RehearsalError`). The master key comes from
``REHEARSAL_MASTER_KEY`` or ``--key-file`` and is never printed, except by ``keygen``, whose job it is.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

from rehearsal import __version__
from rehearsal.cli.common import (
    EXIT_ERROR,
    EXIT_FAIL,
    EXIT_NEEDS_APPROVAL,
    EXIT_OK,
    EXIT_USAGE,
    KEY_ENV,
    Report,
    Verb,
    encrypted,
    keys_from_args,
    memory_folder,
    missing_key,
    open_memory,
    parse_where_option,
)
from rehearsal.cli.encoder_options import add_encoder_arguments, encoder_from_args
from rehearsal.cli.gate_verbs import gate_args, run_gate
from rehearsal.cli.governance_verbs import governance_verbs
from rehearsal.cli.memory_verbs import memory_verbs
from rehearsal.cli.records import Record, RecordMapper, field_list, id_list, open_records, positive_int
from rehearsal.cli.run_verbs import add_set_argument, load_run_config, run_verbs, stdout_to_stderr
from rehearsal.crypto.keys import KeyRing, validate_tenant
from rehearsal.errors import (
    MissingKeyError,
    NotFoundError,
    RehearsalError,
    UpdateBlockedError,
    ValidationError,
    WrongKeyError,
)
from rehearsal.governance.audit_log import AuditLog, default_log_path
from rehearsal.governance.audited import AuditedMemory
from rehearsal.memory.facade import RehearsalMemory
from rehearsal.store.failures import storage_errors

__all__ = ["KEY_ENV", "VERBS", "Report", "Verb", "build_parser", "main"]

PROG = "rehearsal"


class UsageError(Exception):
    """A command line argparse rejects (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    # argparse prints usage and exits; we want one line and a status the caller controls.
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


# -- keys and opening --------------------------------------------------------------------------------


def _audited(args: argparse.Namespace, memory: RehearsalMemory, keys: KeyRing | None = None) -> Any:
    """``memory`` behind its audit log (``PATH/audit.log``) when it is encrypted, so every mutation a verb
    makes is logged; an unencrypted embedding-only memory has no key to sign a log with."""

    keys = keys if keys is not None else keys_from_args(args)
    if keys is None or not encrypted(args.path):
        return memory
    return AuditedMemory(memory, AuditLog.open(default_log_path(args.path), keys), actor="cli")


def _create(args: argparse.Namespace, *, embedding_only: bool) -> RehearsalMemory:

    keys = keys_from_args(args)
    if keys is None and not embedding_only:
        raise MissingKeyError(
            f"a memory that stores text is encrypted: set {KEY_ENV} or pass --key-file "
            "(make a key with 'rehearsal keygen'), or use --embedding-only"
        )
    encoder = encoder_from_args(args)
    return RehearsalMemory.create(args.path, keys=keys, embedding_only=embedding_only, encoder=encoder)


def _exists(path: str) -> bool:
    folder = Path(path)
    return folder.is_dir() and any(folder.iterdir())


# -- verbs -------------------------------------------------------------------------------------------


def _init_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--embedding-only", action="store_true", help="store no text, only vectors and metadata")
    add_encoder_arguments(p)


def _init(args: argparse.Namespace) -> Report:
    with _create(args, embedding_only=args.embedding_only) as memory:
        stats = memory.stats()
    mode = "embedding-only" if stats["embedding_only"] else "encrypted"
    data = {"path": args.path, "mode": mode, **{k: stats[k] for k in ("encrypted", "encoder", "dim")}}
    lines = [f"created {mode} memory at {args.path} ({stats['encoder']}, dim {stats['dim']})"]
    return Report(data | clear_vectors_note(stats), lines + clear_vectors_lines(stats))


def clear_vectors_note(stats: dict[str, Any]) -> dict[str, Any]:
    """``--json``'s statement of whether vectors sit unencrypted on disk."""
    return {"vectors_in_clear": not stats["encrypted"]}


def clear_vectors_lines(stats: dict[str, Any]) -> list[str]:
    if stats["encrypted"]:
        return []
    # Said every time such a memory is made: embeddings can be inverted into close copies of their text.
    return [
        "note: no master key, so the vectors are stored in the clear; embeddings can be inverted into "
        "text close to the original. Set a key (rehearsal keygen) to seal them."
    ]


_FIELDS_HELP = (
    "more fields kept as metadata (label and task are taken by default); tags can be filtered with --where"
)


def _ingest_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help="a .jsonl or .csv file, or a saved dataset folder")
    p.add_argument("--text-field", default="text", help="the field holding the text (default: text)")
    p.add_argument("--label-field", default="label", help="the field holding the label (default: label)")
    p.add_argument("--task-field", default="task", help="the field holding the task (default: task)")
    p.add_argument("--task", help="give every record this task (instead of a task field)")
    p.add_argument("--metadata-fields", type=field_list, default=[], metavar="A,B", help=_FIELDS_HELP)
    p.add_argument(
        "--retain-until",
        metavar="DATE",
        help="expire the records after this ISO date (unless one says)",
    )
    owner = p.add_mutually_exclusive_group()
    owner.add_argument("--tenant", help="the tenant that owns these records (default: 'default')")
    owner.add_argument("--tenant-field", metavar="NAME", help="the field naming each record's tenant")
    p.add_argument("--source-field", help="embedding-only: the field with each record's source reference")
    p.add_argument("--split", help="the split to read from a saved DatasetDict")
    p.add_argument("--batch-size", type=positive_int, default=256, help="records added per commit")
    p.add_argument("--embedding-only", action="store_true", help="if PATH is new, create it embedding-only")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_encoder_arguments(p)


def _ingest(args: argparse.Namespace) -> Report:
    from tqdm import tqdm

    source = open_records(args.file, split=args.split)
    mapper = RecordMapper(
        text_field=args.text_field,
        metadata_fields=args.metadata_fields,
        source_field=args.source_field,
        label_field=args.label_field,
        task_field=args.task_field,
        task=args.task,
        retain_until=args.retain_until,
        tenant_field=args.tenant_field,
    )
    if args.tenant is not None:
        validate_tenant(args.tenant)  # before the memory is created or a record embedded
    total = source.check(mapper)  # every record, before any is added: no half-ingested files
    if total == 0:
        raise ValidationError(f"{args.file!r} holds no records")
    created = not _exists(args.path)
    if created:
        _check_mode(args, embedding_only=args.embedding_only)
        memory = _create(args, embedding_only=args.embedding_only)
    else:
        memory = open_memory(args, read_only=False)
    with _audited(args, memory) as memory:
        _check_mode(args, embedding_only=memory.embedding_only)
        ids: list[int] = []
        tasks: dict[str, int] = {}
        labels: set[str] = set()
        memory.encoder  # noqa: B018 - load it now, so the bar measures ingestion and not start-up
        with tqdm(total=total, unit="rec", desc="ingest", file=sys.stderr, disable=args.quiet) as bar:
            for batch in source.batches(mapper, args.batch_size):
                try:
                    for tenant, rows in _by_tenant(batch, args.tenant):
                        ids += memory.add(
                            [r.text for r in rows],
                            metadata=[r.metadata for r in rows],
                            tenant=tenant,
                            sources=[r.source for r in rows if r.source] if memory.embedding_only else None,
                        )
                except RehearsalError as exc:
                    raise type(exc)(f"{exc} ({len(ids)} records from earlier batches were added)") from None
                bar.update(len(batch))
                for r in batch:
                    task = str(r.metadata.get("task"))
                    tasks[task] = tasks.get(task, 0) + 1
                    if r.metadata.get("label") is not None:
                        labels.add(repr(r.metadata["label"]))
        entries = len(memory)
        stats = {"encrypted": encrypted(args.path)}
    data = dict(path=args.path, created=created, added=len(ids), first_id=min(ids), last_id=max(ids))
    data.update(entries=entries, tasks=tasks, distinct_labels=len(labels))
    line = f"added {len(ids)} records (ids {min(ids)}..{max(ids)}) to {args.path}; it now holds {entries}"
    # Say what the records were taken as: a task of None here is the silent mistake a user most often makes.
    labelled = f"{len(labels)} distinct" if labels else f"none (no record has a {args.label_field!r} field)"
    lines = [line, f"tasks: {json.dumps(tasks)}", f"labels: {labelled}"]
    if created:
        data |= clear_vectors_note(stats)
        lines += clear_vectors_lines(stats)
    return Report(data, lines)


def _by_tenant(batch: list[Record], default: str | None) -> list[tuple[str | None, list[Record]]]:
    """The batch cut into runs of one tenant (``add`` takes one tenant per call); runs, not groups, so that
    ids follow the order of the file."""
    runs = itertools.groupby(batch, key=lambda r: r.tenant if r.tenant is not None else default)
    return [(tenant, list(rows)) for tenant, rows in runs]


def _check_mode(args: argparse.Namespace, *, embedding_only: bool) -> None:
    if args.embedding_only and not embedding_only:
        raise ValidationError(f"--embedding-only: the memory at {args.path!r} exists and stores text")
    if embedding_only and args.source_field is None:
        raise ValidationError("an embedding-only memory needs each record's reference: pass --source-field")
    if not embedding_only and args.source_field is not None:
        raise ValidationError("--source-field is for embedding-only memories; this one stores the text")


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
    return Report({"path": args.path, "ok": True, **counts}, [line.format(**counts)])


def _delete_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ids", type=id_list, required=True, metavar="1,2,3", help="the ids to delete")


def _delete(args: argparse.Namespace) -> Report:
    with _audited(args, open_memory(args, read_only=False)) as memory:
        removed = memory.delete(args.ids)
        entries = len(memory)
    data = {"path": args.path, "deleted": removed, "ids": args.ids, "entries": entries}
    return Report(data, [f"deleted {removed} entries; {entries} remain"])


def _forget_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tenant", required=True, help="the tenant to erase")


def _forget(args: argparse.Namespace) -> Report:
    with _audited(args, open_memory(args, read_only=False)) as memory:
        try:
            removed = memory.forget(tenant=args.tenant)
        except NotFoundError:
            # Erasure pipelines retry: a tenant that is already gone is the outcome they asked for.
            entries = len(memory)
            data = {"path": args.path, "tenant": args.tenant, "removed": 0, "entries": entries}
            data["already_absent"] = True
            return Report(
                data, [f"tenant {args.tenant!r} holds nothing here (already forgotten, or never added)"]
            )
        entries = len(memory)
    line = f"forgot tenant {args.tenant!r}: {removed} entries removed, its key destroyed; {entries} remain"
    return Report({"path": args.path, "tenant": args.tenant, "removed": removed, "entries": entries}, [line])


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
    with _audited(args, memory, keys=old) as audited:
        audited.rotate_keys(new_keys)
    data = {"path": args.path, "old_fingerprint": old.fingerprint, "new_fingerprint": new_keys.fingerprint}
    line = f"rotated the master key of {args.path}: {old.fingerprint} -> {new_keys.fingerprint}"
    return Report(data, [line, "the old key no longer opens this memory"])


def _finish_rotation(args: argparse.Namespace, old: KeyRing, new_keys: KeyRing) -> Report:
    """The memory opens only with the new key: a rotation died after the memory was rewrapped and before
    its audit log was. Finish it (the log's rotation entry is signed with the old key, as always)."""

    with open_memory(args, read_only=False, keys=new_keys):  # WrongKeyError: neither key opens it
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
    try:
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ValidationError(f"{args.out!r} exists; a key file is never overwritten") from None
    except OSError as exc:
        raise ValidationError(f"cannot create {args.out!r}: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(keys.export_base64() + "\n")
    line = f"wrote a new master key to {args.out} (fingerprint {keys.fingerprint})"
    return Report({"path": args.out, "fingerprint": keys.fingerprint}, [line])


# To add a verb (e.g. ``run``, ``bench``): write ``_name_args`` and ``_name``, and register it here.
def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", metavar="CONFIG", help="run config (.toml, .yaml or .json)")
    p.add_argument("--output-dir", help="where results go (default: the config's output_dir)")
    p.add_argument("--resume", action="store_true", help="skip the tasks an interrupted run finished")
    p.add_argument("--key-file", help=f"file with the memory's base64 master key (default: ${KEY_ENV})")
    add_set_argument(p)


def _run(args: argparse.Namespace) -> Report:
    from rehearsal.runner.preflight import preflight

    config = load_run_config(args)
    # Everything that can be wrong with the command is checked before torch and the model load.
    checked = preflight(config, output_dir=args.output_dir, resume=args.resume, keys=keys_from_args(args))
    # Only this verb needs torch and transformers (seconds to import): the others start without them.
    from rehearsal.runner.loop import run

    try:
        with stdout_to_stderr():  # the Trainer prints its logs; stdout is for the report
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
    "init": Verb("create an empty memory", _init_args, _init),
    "ingest": Verb("add records from a JSONL/CSV file or a saved dataset", _ingest_args, _ingest),
    "search": Verb("nearest entries to query texts", _search_args, _search),
    "stats": Verb("entries, tenants, tasks and sizes", lambda p: None, _stats),
    "verify": Verb("authenticate every record and check the index", lambda p: None, _verify),
    "delete": Verb("remove entries by id", _delete_args, _delete),
    "forget": Verb("erase a tenant: destroy its key, remove its entries", _forget_args, _forget),
    "rotate-key": Verb("rewrap the data keys under a new master key", _rotate_args, _rotate_key),
    "keygen": Verb("make a new master key (file or stdout)", _keygen_args, _keygen, uses_memory=False),
    "bench": Verb("recall and speed of the memory's search against exact search", _bench_args, _bench),
}
VERBS["run"] = Verb("a continual fine-tuning run from a TOML/YAML config", _run_args, _run, uses_memory=False)
VERBS["gate"] = Verb("validate an update: regression and PII safety", gate_args, run_gate, uses_memory=False)
VERBS.update(memory_verbs())  # get, peek, count, export
VERBS.update(run_verbs())  # compare
VERBS.update(governance_verbs())  # audit, expire, versions, rollback: rehearsal/cli_governance.py


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Rehearsal memories for continual fine-tuning.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for name, verb in VERBS.items():
        p = sub.add_parser(name, help=verb.help, description=verb.help)
        if verb.uses_memory:
            p.add_argument("path", metavar="PATH", help="the memory folder")
            p.add_argument("--key-file", help=f"file with the base64 master key (default: ${KEY_ENV})")
        verb.add_arguments(p)
        p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    return parser


def _print(report: Report, as_json: bool, out: TextIO) -> None:
    if as_json:
        out.write(json.dumps(report.data, indent=2, ensure_ascii=False, default=str) + "\n")
    elif report.lines:
        out.write("\n".join(report.lines) + "\n")


def _fail(message: str, status: int) -> int:
    first = " ".join(message.split())  # one line, whatever the message held
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
    if VERBS[args.verb].uses_memory:
        args.path = memory_folder(args.path)
    try:
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
