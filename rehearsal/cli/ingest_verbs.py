"""The verbs that make and fill a memory: ``init`` and ``ingest`` (JSON lines, CSV or a saved dataset,
checked whole before anything is added, with the usual columns taken by default)."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from typing import Any

import numpy as np

from rehearsal.cli.common import (
    KEY_ENV,
    Report,
    Verb,
    audited,
    encrypted,
    keys_from_args,
    memory_exists,
    open_memory,
)
from rehearsal.cli.encoder_options import add_encoder_arguments, encoder_from_args
from rehearsal.cli.records import EXTERNAL_ID, Record, RecordMapper, field_list, open_records, positive_int
from rehearsal.crypto.keys import validate_tenant
from rehearsal.errors import MissingKeyError, RehearsalError, ValidationError
from rehearsal.memory.batch import DEFAULT_TENANT
from rehearsal.memory.facade import RehearsalMemory

__all__ = ["ingest_verbs"]


def _create(args: argparse.Namespace, *, embedding_only: bool) -> RehearsalMemory:

    keys = keys_from_args(args)
    if keys is None and not embedding_only:
        raise MissingKeyError(
            f"a memory that stores text is encrypted: set {KEY_ENV} or pass --key-file "
            "(make a key with 'rehearsal keygen'), or use --embedding-only"
        )
    encoder = encoder_from_args(args)
    return RehearsalMemory.create(
        args.path,
        keys=keys,
        embedding_only=embedding_only,
        encoder=encoder,
        vectors=getattr(args, "vectors", None),
    )


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
    return Report(data | _clear_vectors_note(stats), lines + _clear_vectors_lines(stats))


def _clear_vectors_note(stats: dict[str, Any]) -> dict[str, Any]:
    """``--json``'s statement of whether vectors sit unencrypted on disk."""
    return {"vectors_in_clear": not stats["encrypted"]}


def _clear_vectors_lines(stats: dict[str, Any]) -> list[str]:
    if stats["encrypted"]:
        return []
    # Said every time such a memory is made: embeddings can be inverted into close copies of their text.
    return [
        "note: no master key, so the vectors are stored in the clear; embeddings can be inverted into "
        "text close to the original. Set a key (rehearsal keygen) to seal them."
    ]


_FIELDS_HELP = (
    "the fields kept as metadata beside label and task (default: every other field the file has; '' for "
    "none); tags can be filtered with --where"
)


def _ingest_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help="a .jsonl or .csv file, or a saved dataset folder")
    p.add_argument("--text-field", default="text", help="the field holding the text (default: text)")
    p.add_argument("--label-field", default="label", help="the field holding the label (default: label)")
    p.add_argument("--task-field", default="task", help="the field holding the task (default: task)")
    p.add_argument("--task", help="give every record this task (instead of a task field)")
    p.add_argument("--metadata-fields", type=field_list, default=None, metavar="A,B", help=_FIELDS_HELP)
    p.add_argument(
        "--retain-until",
        metavar="DATE",
        help="expire the records after this ISO date (unless one says)",
    )
    owner = p.add_mutually_exclusive_group()
    owner.add_argument("--tenant", help="the tenant that owns these records (default: 'default')")
    owner.add_argument("--tenant-field", metavar="NAME", help="the field naming each record's tenant")
    p.add_argument("--source-field", help="embedding-only: the field with each record's source reference")
    p.add_argument(
        "--id-field",
        metavar="NAME",
        help="the field holding each record's own id: ingesting an id again replaces that record (upsert)",
    )
    p.add_argument(
        "--vector-field",
        metavar="NAME",
        help="the field holding each record's vector (an export --with-vectors): stored as it is, not "
        "recomputed; rows may then lack text if the memory is embedding-only",
    )
    p.add_argument("--split", help="the split to read from a saved DatasetDict")
    p.add_argument("--batch-size", type=positive_int, default=256, help="records added per commit")
    p.add_argument("--embedding-only", action="store_true", help="if PATH is new, create it embedding-only")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_encoder_arguments(p)


def _ingest(args: argparse.Namespace) -> Report:
    from tqdm import tqdm

    source = open_records(args.file, split=args.split)
    mapper = _mapper(args)
    if args.tenant is not None:
        validate_tenant(args.tenant)  # before the memory is created or a record embedded
    total = source.check(mapper)  # every record, before any is added: no half-ingested files
    if total == 0:
        raise ValidationError(f"{args.file!r} holds no records")
    if args.id_field is not None:
        _check_external_ids(source, mapper, args.id_field)
    created = not memory_exists(args.path)
    if created:
        _check_mode(args, embedding_only=args.embedding_only)
        memory = _create(args, embedding_only=args.embedding_only)
    else:
        memory = open_memory(args, read_only=False)
    if mapper.vectors is not None:
        try:
            mapper.vectors.check_fits(memory)
        except RehearsalError:
            memory.close()
            if created:  # the command made it for this file, which cannot go in: leave nothing behind
                shutil.rmtree(args.path, ignore_errors=True)
            raise
    with audited(args, memory) as memory:
        _check_mode(args, embedding_only=memory.embedding_only)
        ids: list[int] = []
        replaced: list[int] = []
        tasks: dict[str, int] = {}
        labels: set[str] = set()
        memory.encoder  # noqa: B018 - load it now, so the bar measures ingestion and not start-up
        with tqdm(total=total, unit="rec", desc="ingest", file=sys.stderr, disable=args.quiet) as bar:
            for batch in source.batches(mapper, args.batch_size):
                try:
                    new, old = _add_batch(memory, batch, args.tenant, upsert=args.id_field is not None)
                except RehearsalError as exc:
                    raise type(exc)(f"{exc} ({len(ids)} records from earlier batches were added)") from None
                ids, replaced = ids + new, replaced + old
                bar.update(len(batch))
                for r in batch:
                    task = str(r.metadata.get("task"))
                    tasks[task] = tasks.get(task, 0) + 1
                    if r.metadata.get("label") is not None:
                        labels.add(repr(r.metadata["label"]))
        entries = len(memory)
        stats = {"encrypted": encrypted(args.path)}
    data = dict(path=args.path, created=created, added=len(ids), first_id=min(ids), last_id=max(ids))
    data.update(entries=entries, tasks=tasks, distinct_labels=len(labels), replaced=len(replaced))
    line = f"added {len(ids)} records (ids {min(ids)}..{max(ids)}) to {args.path}; it now holds {entries}"
    if replaced:
        line += f" ({len(replaced)} replaced records with the same {args.id_field!r})"
    # Say what the records were taken as: a task of None here is the silent mistake a user most often makes.
    labelled = f"{len(labels)} distinct" if labels else f"none (no record has a {args.label_field!r} field)"
    lines = [line, f"tasks: {json.dumps(tasks)}", f"labels: {labelled}"]
    if created:
        data |= _clear_vectors_note(stats)
        lines += _clear_vectors_lines(stats)
    return Report(data, lines)


def _mapper(args: argparse.Namespace) -> RecordMapper:
    return RecordMapper(
        text_field=args.text_field,
        metadata_fields=args.metadata_fields,
        source_field=args.source_field,
        label_field=args.label_field,
        task_field=args.task_field,
        task=args.task,
        retain_until=args.retain_until,
        tenant_field=args.tenant_field,
        id_field=args.id_field,
        vector_field=args.vector_field,
    )


def _add_batch(
    memory: RehearsalMemory, batch: list[Record], tenant: str | None, *, upsert: bool
) -> tuple[list[int], list[int]]:
    """(new ids, replaced ids): one transaction per batch, whatever its mix of tenants (each sealed under
    its own key); an upsert replaces the records with the same external ids."""
    texts: list[str] | None = [r.text for r in batch]
    metadata = [r.metadata for r in batch]
    sources = [r.source for r in batch if r.source] if memory.embedding_only else None
    owners = _owners(batch, tenant)
    vectors = None
    if batch and batch[0].vector is not None:  # --vector-field: every record has one (checked)
        vectors = np.asarray([r.vector for r in batch], dtype=np.float32)
        texts = None if memory.embedding_only else texts
    if not upsert:
        return memory.add(texts, metadata=metadata, tenant=owners, sources=sources, vectors=vectors), []
    return memory.upsert(
        texts, key=EXTERNAL_ID, metadata=metadata, tenant=owners, sources=sources, vectors=vectors
    )


def _check_external_ids(source: Any, mapper: RecordMapper, field: str) -> None:
    """Each record's own id appears once in the file (which copy would win is not for us to guess)."""
    first: dict[Any, str] = {}
    for position, item in source:
        where = source.describe(position)
        value = mapper(item, where).metadata.get(EXTERNAL_ID)
        if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
            raise ValidationError(f"{where}: {field!r} must be a non-empty string or int, got {value!r}")
        if value in first:
            raise ValidationError(f"{where}: {field!r} {value!r} already appears at {first[value]}")
        first[value] = where


def _owners(batch: list[Record], default: str | None) -> str | list[str] | None:
    """The batch's one tenant (``--tenant``, or None for the memory's default), or one per record from
    ``--tenant-field``."""
    if all(r.tenant is None for r in batch):
        return default
    return [r.tenant if r.tenant is not None else (default or DEFAULT_TENANT) for r in batch]


def _check_mode(args: argparse.Namespace, *, embedding_only: bool) -> None:
    if args.embedding_only and not embedding_only:
        raise ValidationError(f"--embedding-only: the memory at {args.path!r} exists and stores text")
    if embedding_only and args.source_field is None:
        raise ValidationError("an embedding-only memory needs each record's reference: pass --source-field")
    if not embedding_only and args.source_field is not None:
        raise ValidationError("--source-field is for embedding-only memories; this one stores the text")


def ingest_verbs() -> dict[str, Verb]:
    return {
        "init": Verb("create an empty memory", _init_args, _init),
        "ingest": Verb("add records from a JSONL/CSV file or a saved dataset", _ingest_args, _ingest),
    }
